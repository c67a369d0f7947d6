#!/bin/sh
# One Redis of `make run-ha`: a primary, a replica or a sentinel on loopback, each with its
# own folder under .conveyor/ha. Each config file is written once; after that Redis and
# Sentinel keep their own (Sentinel rewrites both when it fails over), so starting again
# after a failover starts the topology the sentinels left, not the first one. (`rm -r
# .conveyor/ha` starts from scratch.)
#   redis.sh primary PORT | redis.sh replica PORT PRIMARY_PORT | redis.sh sentinel PORT PRIMARY_PORT
set -eu
role=$1 port=$2 primary=${3:-}
dir=".conveyor/ha/$role-$port"
conf="$dir/redis.conf"
mkdir -p "$dir"
if [ ! -f "$conf" ]; then
  case $role in
    primary|replica)
      {
        echo "port $port"
        echo "bind 127.0.0.1"
        echo "dir $PWD/$dir"
        echo "appendonly yes"
        echo "appendfsync everysec"
        echo "maxmemory-policy noeviction"
        echo "save \"\""
        if [ "$role" = replica ]; then echo "replicaof 127.0.0.1 $primary"; fi
      } > "$conf" ;;
    sentinel)
      {
        echo "port $port"
        echo "bind 127.0.0.1"
        echo "dir $PWD/$dir"
        echo "sentinel monitor conveyor 127.0.0.1 $primary 2"
        echo "sentinel down-after-milliseconds conveyor 2000"
        echo "sentinel failover-timeout conveyor 10000"
      } > "$conf" ;;
    *) echo "redis.sh: primary, replica or sentinel, not $role" >&2; exit 2 ;;
  esac
fi
mode=""
if [ "$role" = sentinel ]; then mode=--sentinel; fi
# The primary the sentinels name now (empty when none answers): a server that was primary
# and comes back must start as its replica. Started as a primary, it would take writes from
# anyone who asks a sentinel that has not yet heard of the failover, until the sentinels
# demote it and its resync throws those writes away.
current_primary() {
  for sentinel in ${SENTINEL_PORTS:-}; do
    answer=$(redis-cli -p "$sentinel" --raw sentinel get-master-addr-by-name conveyor 2>/dev/null | tail -n 1) || continue
    if [ -n "$answer" ]; then echo "$answer"; return; fi
  done
}
# Killed, it comes back 5 s later, as a machine would: honcho stops everything when one of
# its processes ends.
while :; do
  follow=""
  if [ "$role" != sentinel ]; then
    primary_now=$(current_primary)
    if [ -n "$primary_now" ] && [ "$primary_now" != "$port" ]; then
      follow="--replicaof 127.0.0.1 $primary_now"
      echo "redis.sh: the sentinels name port $primary_now as primary: starting as its replica" >&2
    fi
  fi
  redis-server "$conf" $mode $follow || true
  echo "redis.sh: the $role on port $port ended; starting it again in 5 s" >&2
  sleep 5
done
