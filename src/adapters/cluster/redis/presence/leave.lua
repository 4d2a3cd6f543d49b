-- leave: ARGV = prefix, inc, node id. Removes every entry of the
-- incarnation, its set, and the node key if it still names this
-- incarnation (a newer one may have claimed it). Returns the entry count.
local inc, node = ARGV[2], ARGV[3]
local ik = ikey(inc)
local now = now_ms()
local removed = 0
for _, m in ipairs(redis.call('SMEMBERS', ik)) do
  local p = cjson.decode(m)
  local user = p[1]
  removed = removed + redis.call('ZREM', skey(user), inc .. '/' .. p[2])
  settle(user, now)
end
redis.call('DEL', ik)
local nk = P .. ':node:' .. node
if redis.call('GET', nk) == inc then
  redis.call('DEL', nk)
end
return removed
