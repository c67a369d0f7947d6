-- Fragment: JSON text read without decoding it (Redis' cjson keeps 14 digits of a number
-- and turns [] into {}, so a value passed on must stay the text it was). json_end(s, i):
-- the position after the value starting at ``i``; json_elements(s): a list's elements as
-- texts; json_member(s, key): an object's member as text; json_kind(s): what ``s`` is;
-- json_path(s, path): the part of ``s`` a path ({"key", 0, -1 ...}) selects, or nil and why.
--! include db/decode
local function json_skip(s, i)
  local _, e = string.find(s, '^[ \t\r\n]*', i)
  return e + 1
end
local function json_end(s, i)
  local c = string.sub(s, i, i)
  if c == '"' then
    local j = i + 1
    while true do
      local a = string.find(s, '["\\]', j)
      if not a then return nil end
      if string.sub(s, a, a) == '\\' then j = a + 2 else return a + 1 end
    end
  elseif c == '{' or c == '[' then
    local depth, j = 0, i
    while true do
      local a = string.find(s, '[%[%]{}"]', j)
      if not a then return nil end
      local ch = string.sub(s, a, a)
      if ch == '"' then
        j = json_end(s, a)
        if not j then return nil end
      else
        if ch == '{' or ch == '[' then depth = depth + 1 else depth = depth - 1 end
        j = a + 1
        if depth == 0 then return j end
      end
    end
  end
  local _, e = string.find(s, '^[^,%]}%s]+', i)
  if not e then return nil end
  return e + 1
end
local function json_kind(s)
  local c = string.sub(s, json_skip(s, 1), json_skip(s, 1))
  if c == '{' then return 'an object' elseif c == '[' then return 'a list'
  elseif c == '"' then return 'a string' elseif c == 'n' then return 'null'
  elseif c == 't' or c == 'f' then return 'a boolean' end
  return 'a number'
end
-- Calls each(text) for every element of the list ``s``; false if ``s`` is no list.
local function json_each(s, each)
  local i = json_skip(s, 1)
  if string.sub(s, i, i) ~= '[' then return false end
  i = json_skip(s, i + 1)
  if string.sub(s, i, i) == ']' then return true end
  while true do
    local e = json_end(s, i)
    if not e then return false end
    each(string.sub(s, i, e - 1))
    i = json_skip(s, e)
    local c = string.sub(s, i, i)
    if c == ']' then return true end
    if c ~= ',' then return false end
    i = json_skip(s, i + 1)
  end
end
local function json_elements(s)
  local out = {}
  if not json_each(s, function(e) out[#out + 1] = e end) then return nil end
  return out
end
local function json_member(s, key)
  local i = json_skip(s, 1)
  if string.sub(s, i, i) ~= '{' then return nil end
  i = json_skip(s, i + 1)
  while string.sub(s, i, i) == '"' do
    local e = json_end(s, i)
    if not e then return nil end
    local name = decoded(string.sub(s, i, e - 1), nil)  -- undecodable: no selector's
    i = json_skip(s, e)
    if string.sub(s, i, i) ~= ':' then return nil end
    i = json_skip(s, i + 1)
    local v = json_end(s, i)
    if not v then return nil end
    if name == key then return string.sub(s, i, v - 1) end
    i = json_skip(s, v)
    if string.sub(s, i, i) ~= ',' then return nil end
    i = json_skip(s, i + 1)
  end
  return nil
end
local function json_path(s, path)
  local at = ''
  for _, part in ipairs(path) do
    if type(part) == 'number' then
      local items = json_elements(s)
      if not items then return nil, at .. ' is ' .. json_kind(s) .. ', not a list' end
      local n = part + 1
      if part < 0 then n = #items + part + 1 end
      at = at .. '[' .. part .. ']'
      if n < 1 or n > #items then
        return nil, at .. ': out of range (the list has ' .. #items .. ' items)'
      end
      s = items[n]
    else
      if json_kind(s) ~= 'an object' then
        return nil, at .. ' is ' .. json_kind(s) .. ', not an object'
      end
      local found = json_member(s, part)
      at = at .. '.' .. part
      if not found then return nil, at .. ': no such key' end
      s = found
    end
  end
  return s
end
