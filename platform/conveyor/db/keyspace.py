"""Every Redis key and channel Conveyor uses, in one place."""

from __future__ import annotations

PREFIX = "conveyor"
EVENTS_CHANNEL = f"{PREFIX}:events"  # payload: "<id> <record as JSON>" when one finishes
WORKER_PREFIX = f"{PREFIX}:worker:"  # + name: a live worker's heartbeat, with a TTL
WORKERS = f"{PREFIX}:workers"  # set of names that may have a heartbeat (no SCAN needed)

# kombu's Redis transport keeps one list per queue and priority step; we configure the
# separator so the lists read as ``realtime``, ``realtime:1`` ... ``realtime:9``.
PRIORITY_SEP = ":"
PRIORITY_STEPS = list(range(10))


# kombu's Redis transport: delivery tag -> time delivered, for messages not yet acked.
KOMBU_UNACKED_INDEX = "unacked_index"
KOMBU_UNACKED = "unacked"  # delivery tag -> the message a consumer took and has not acked

# Each invocation's message, kept from its submit until a worker's START script sees it
# (:mod:`conveyor.invocations.stranded`): id -> "<list> <sequence>", and id -> the message (its
# delivery tag is the id); a sequence per list orders its messages.
SENT = f"{PREFIX}:sent"
# Each function's submitted invocations waiting to start: one sorted set, members
# "<function>\0<id>" (invocations/lua/waiting.lua).
WAITING = f"{PREFIX}:waiting"
# Submitted invocations with a deadline, by when it is due: ``start_by`` ([limits]
# max_queue_time, or a request's Cancel-After) while they wait, then ``cancel_at`` (a
# request's Cancel-After) while they run (invocations/lua/deadline.lua).
DEADLINES = f"{PREFIX}:deadlines"
# [limits] concurrency: a function's slots (running ids by when their lease ends) and its
# parked messages ("<queue list> <message>"), invocations/lua/slots.lua.
# An API key's usage, for its limits: its waiting and unfinished invocations (sorted sets),
# its rate's theoretical arrival time, its count per UTC day: "<prefix><key id>:<part>".
KEY_USAGE = f"{PREFIX}:key-usage:"


def key_usage(key_id: str, part: str) -> str:
    return f"{KEY_USAGE}{key_id}:{part}"


SLOTS_PREFIX = f"{PREFIX}:slots:"
PARKED_PREFIX = f"{PREFIX}:parked:"


def rate(function: str) -> str:
    """[limits] rate: the function's theoretical arrival time (invocations/lua/rate.lua)."""
    return f"{PREFIX}:rate:{function}"


def rate_parked(function: str) -> str:
    """[limits] rate: its parked messages, by when their turn comes."""
    return f"{PREFIX}:rate-parked:{function}"


def slots(function: str) -> str:
    return f"{SLOTS_PREFIX}{function}"


def parked(function: str) -> str:
    return f"{PARKED_PREFIX}{function}"


SENT_MESSAGES = f"{PREFIX}:sent-messages"
STRANDED = f"{PREFIX}:stranded"  # id -> when a sweep first found its message nowhere
STRANDED_LOCK = f"{PREFIX}:stranded-lock"


def sent_sequence(queue_list: str) -> str:
    return f"{PREFIX}:sent-seq:{queue_list}"


def record(invocation_id: str) -> str:
    return f"{PREFIX}:job:{invocation_id}"


# API keys: digest -> the key's record (JSON); name -> digest; digest -> last used; and a
# channel on which every change is published, so each API process drops what it cached.
API_KEYS = f"{PREFIX}:api-keys"
API_KEY_NAMES = f"{PREFIX}:api-key-names"
API_KEYS_USED = f"{PREFIX}:api-keys-used"
API_KEYS_CHANNEL = f"{PREFIX}:api-keys-changed"
# key id -> the key's own webhook signing secret (conveyor keys create --webhook-secret):
# its invocations' deliveries are signed with it instead of the platform's.
API_KEY_WEBHOOK_SECRETS = f"{PREFIX}:api-key-webhook-secrets"

# Webhook deliveries: one hash each (the record as it was, the URL, attempts), and a sorted
# set of them by when they are due; the deliverer blocks on the wake-up list.
WEBHOOKS_DUE = f"{PREFIX}:webhooks:due"
WEBHOOKS_WAKE = f"{PREFIX}:webhooks:wake"


def webhook_delivery(invocation_id: str, event: str) -> str:
    return f"{PREFIX}:webhook:{invocation_id}:{event}"


# What the platform has done (see metrics/db.py): counters and histograms per
# function, 10-second buckets for the dashboard, the last finished invocations. Histograms
# store bucket numbers: bump METRICS_FORMAT when metrics/db.py's bucket bounds change.
METRICS_FORMAT = 1
_METRICS = f"{PREFIX}:metrics:{METRICS_FORMAT}"
METRICS_INVOCATIONS = f"{_METRICS}:invocations"
METRICS_FAILURES = f"{_METRICS}:failures"
METRICS_RETRIES = f"{_METRICS}:retries"
METRICS_REDELIVERIES = f"{_METRICS}:redeliveries"
METRICS_DURATION = f"{_METRICS}:duration"
METRICS_QUEUE_WAIT = f"{_METRICS}:queue-wait"
METRICS_BATCH_SIZE = f"{_METRICS}:batch-size"
METRICS_REJECTIONS = f"{_METRICS}:rejections"  # "<function>\t<limit>" -> refused submits
RECENT = f"{PREFIX}:recent"


def stats_bucket(start: int) -> str:
    return f"{_METRICS}:dashboard:{start}"


# Map jobs (see maps/db.py): the job's hash; its items waiting to be fed (a list of
# "[index,attempt,input]" entries); each fed chunk's items; results by index; indices in
# the order they finished; retries waiting for their backoff; the chunks running now.
MAP_EVENTS_CHANNEL = f"{PREFIX}:map-events"  # payload: the job id, whenever it changes


def map_job(job_id: str) -> str:
    return f"{PREFIX}:map:{job_id}"


def map_inputs(job_id: str) -> str:
    return f"{PREFIX}:map:{job_id}:inputs"


def map_chunk(job_id: str, chunk: int) -> str:
    return f"{PREFIX}:map:{job_id}:chunk:{chunk}"


def map_results(job_id: str) -> str:
    return f"{PREFIX}:map:{job_id}:results"


def map_done(job_id: str) -> str:
    return f"{PREFIX}:map:{job_id}:done"


def map_retries(job_id: str) -> str:
    return f"{PREFIX}:map:{job_id}:retries"


def map_active(job_id: str) -> str:
    return f"{PREFIX}:map:{job_id}:active"


def map_parked(job_id: str) -> str:
    """Set while a timer that feeds the job waits parked under its function's limits."""
    return f"{PREFIX}:map:{job_id}:parked"


def map_jobs(function: str) -> str:
    """A function's recent jobs, by creation time."""
    return f"{PREFIX}:maps:{function}"


def map_idempotency(function: str, owner: str, key: str) -> str:
    return f"{PREFIX}:idempotency-map:{function}:{owner}:{key}"


# The function store (see store/db.py): which version of each function
# serves (name -> version, '' while it has none); a function's state (serving, pinned,
# latest, where it came from, its folder's error); its retained versions by when they were
# deployed; a version's record (manifest, schemas, origin) and its bundle (the folder, as a
# zip archive, in a list of chunks) and a bundle being written; the functions that have
# retained versions; how many invocations and map
# jobs of each version are queued or running ("<name>@<version>" -> count): a version in
# use is never collected. Every change of what serves is published by name.
SERVING = f"{PREFIX}:serving"
STORED_FUNCTIONS = f"{PREFIX}:stored-functions"
VERSIONS_IN_USE = f"{PREFIX}:versions-in-use"
FUNCTIONS_CHANNEL = f"{PREFIX}:functions-changed"


def function_state(name: str) -> str:
    return f"{PREFIX}:function:{name}"


def function_versions(name: str) -> str:
    return f"{PREFIX}:function:{name}:versions"


def function_version(name: str, version: str) -> str:
    return f"{PREFIX}:function:{name}:version:{version}"


def bundle(name: str, version: str) -> str:
    return f"{PREFIX}:bundle:{name}:{version}"


def bundle_upload(upload: str) -> str:
    return f"{PREFIX}:bundle-upload:{upload}"


def deployment(deployment_id: str) -> str:
    """One ``PUT /functions/{name}``: its state and outcome (store/deployments.py)."""
    return f"{PREFIX}:deployment:{deployment_id}"


def in_use(name: str, version: str) -> str:
    """The field of :data:`VERSIONS_IN_USE` counting one version's queued work."""
    return f"{name}@{version}"


def idempotency(function: str, owner: str, key: str) -> str:
    """An Idempotency-Key, per function and per API key (``owner``): callers never share."""
    return f"{PREFIX}:idempotency:{function}:{owner}:{key}"


def worker(name: str) -> str:
    return f"{WORKER_PREFIX}{name}"


def queue_list(queue: str, broker_priority: int) -> str:
    """The kombu list holding ``queue``'s messages of one (Redis-side) priority."""
    return queue if broker_priority == 0 else f"{queue}{PRIORITY_SEP}{broker_priority}"


def queue_lists(queue: str) -> list[str]:
    return [queue_list(queue, p) for p in PRIORITY_STEPS]


# Dynamic batching: a stream of waiting items per function, read by a consumer group; a
# flag that is set while a drain trigger for the function is queued; retries waiting for
# their backoff; and, per running batch, what its items are (for the supervising parent).
BATCH_GROUP = "workers"


def batch_stream(function: str) -> str:
    return f"{PREFIX}:batch:{function}"


BATCH_ARMED_TTL = 30  # seconds; a safety net only: a trigger clears the flag when it runs


def batch_armed(function: str) -> str:
    return f"{PREFIX}:batch-armed:{function}"


def batch_delayed(function: str) -> str:
    return f"{PREFIX}:batch-delayed:{function}"


def batch_run(task_id: str) -> str:
    return f"{PREFIX}:batch-run:{task_id}"


# Files (conveyor/files): each file's record (a hash), its bytes when [files] store is
# "redis" (a list of chunks), who holds it (invocations and map jobs that use it: "job:<id>",
# "map:<id>"), and one sorted set of every file by when it expires, which the API's sweeper
# reads; a lock so one API process sweeps at a time.
FILES_EXPIRY = f"{PREFIX}:files:expiry"
FILES_SWEEP_LOCK = f"{PREFIX}:files:sweep-lock"


def file(file_id: str) -> str:
    return f"{PREFIX}:file:{file_id}"


def file_data(file_id: str) -> str:
    return f"{PREFIX}:file-data:{file_id}"


def file_holders(file_id: str) -> str:
    return f"{PREFIX}:file-holders:{file_id}"


def holder(key: str) -> str:
    """The member of ``file-holders`` that a record's or a map job's key stands for."""
    return key.removeprefix(f"{PREFIX}:")


# Streams (conveyor/streams): a streaming invocation's events (a Redis stream whose entry
# ids are the events' sequence numbers, ``<n>-0``), expiring with its record; and a
# channel on which each event is published as it is added, for the API's readers.
STREAM_EVENTS_CHANNEL = f"{PREFIX}:stream-events"  # payload: "<id> <n> <kind> <data>"


def stream(invocation_id: str) -> str:
    return f"{PREFIX}:stream:{invocation_id}"


# Pipeline runs (see pipelines/): a run's state (its frozen plan, input, the step running,
# each step's status, times, attempts and output) and its for_each elements' outputs. A
# step's invocations are ordinary records, "<run>.<step>" and "<run>.<step>.<index>".
RUN_PREFIX = f"{PREFIX}:run:"
RUN_ITEMS = ":items"  # + after run(id): the outputs of the running step's elements
RUN_PENDING = ":pending"  # ... the elements of a streaming or pipeline step not yet started
RUN_RUNNING = ":running"  # ... the ids of that step's element invocations under way


def run(run_id: str) -> str:
    return f"{RUN_PREFIX}{run_id}"


def run_items(run_id: str) -> str:
    return f"{run(run_id)}{RUN_ITEMS}"


def run_key_parts() -> dict[str, str]:
    """What a run's script builds the names of its steps' keys from (the id appended):
    records, runs, streams, webhook deliveries (``webhook`` id ``completed`` or ``started``)."""
    delivery = webhook_delivery("\0", "completed")
    webhook, _, completed = delivery.partition("\0")
    started = webhook_delivery("\0", "start").partition("\0")[2]
    job = map_job("\0")
    return {
        "record": record(""),
        "run": RUN_PREFIX,
        "items": RUN_ITEMS,
        "pending": RUN_PENDING,
        "running": RUN_RUNNING,
        "stream": stream(""),
        "webhook": webhook,
        "completed": completed,
        "started": started,
        "map": job.partition("\0")[0],  # a for_each step's map job: its keys after the id
        **{part: getattr_key(part) for part in ("inputs", "results", "done", "retries", "active")},
        "chunk": map_chunk("\0", 0).partition("\0")[2][:-1],  # ":chunk:" + its number
    }


def getattr_key(part: str) -> str:
    """The suffix of a map job's key ``part`` (``:inputs`` ...), after the job's id."""
    key: str = globals()[f"map_{part}"]("\0")
    return key.partition("\0")[2]


# Schedules (see schedules/): a schedule's state (its last fired tick) and its last runs
# (JSON: tick, invocation id, outcome), by function and the schedule's place in its manifest.
def schedule_state(function: str, index: int) -> str:
    return f"{PREFIX}:schedule:{function}:{index}"


def schedule_runs(function: str, index: int) -> str:
    return f"{PREFIX}:schedule-runs:{function}:{index}"


# Trainings (see trainings/): each function's trainings by when they were started (a
# training is an invocation record with ``training``; its ids are kept here to list them),
# and those whose handler returned, waiting for an API process to make their version (by
# when their claim is due).
TRAININGS_PENDING = f"{PREFIX}:trainings-pending"


def trainings(function: str) -> str:
    return f"{PREFIX}:trainings:{function}"


# Functions' own environments (environments/db.py): each lock by its id, and the versions
# ("<name>@<version>") that use it; the lock goes with the last of them.
def environment_lock(environment_id: str) -> str:
    return f"{PREFIX}:environment:{environment_id}"


def environment_users(environment_id: str) -> str:
    return f"{PREFIX}:environment:{environment_id}:users"
