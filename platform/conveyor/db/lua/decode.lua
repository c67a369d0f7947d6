-- Fragment: decoded(text, default): a stored JSON document as a Lua value, or ``default``
-- where cjson cannot take it (an unpaired surrogate's escape, a number past its range,
-- text that is no JSON). A script that raised there would keep the writes it had made and
-- leave its step half done, so every decode of a stored document goes through here.
local function decoded(text, default)
  if type(text) ~= 'string' then return default end
  local ok, value = pcall(cjson.decode, text)
  if ok then return value end
  return default
end
