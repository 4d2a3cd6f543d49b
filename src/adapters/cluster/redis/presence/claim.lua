-- claim: ARGV = prefix, previous incarnation. Returns user, name, session
-- for each of its entries still present. Set members whose entry is gone
-- are dropped; the others leave the set as their sessions are closed, and
-- Redis deletes the set once it is empty.
local old = ARGV[2]
local ik = ikey(old)
local out = {}
for _, m in ipairs(redis.call('SMEMBERS', ik)) do
  local p = cjson.decode(m)
  local user, session = p[1], p[2]
  if redis.call('ZSCORE', skey(user), old .. '/' .. session) then
    out[#out + 1] = user
    out[#out + 1] = redis.call('HGET', lkey(user), 'name') or ''
    out[#out + 1] = session
  else
    redis.call('SREM', ik, m)
  end
end
return out
