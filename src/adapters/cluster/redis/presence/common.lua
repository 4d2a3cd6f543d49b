-- Prepended to every presence script. ARGV[1] is the key prefix; key names
-- are built here rather than passed in KEYS because close, expired, claim
-- and leave only learn some of them (a user's, an incarnation's) from the
-- data they read. confab uses one standalone Redis, where that is allowed.
local P = ARGV[1]
local ONLINE = P .. ':p:online'

local function skey(user) return P .. ':p:s:' .. user end
local function lkey(user) return P .. ':p:l:' .. user end
local function ikey(inc) return P .. ':inc:' .. inc end

-- Redis time, so that the nodes' clocks never matter.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- A score as an integer string: Lua numbers are doubles, and their default
-- formatting could switch to exponent notation.
local function ms(x) return string.format('%d', x) end

-- Members of a user's session set are `{inc}/{session}`; an incarnation is
-- a UUID, so the first '/' splits them whatever the session id holds.
local function split(member)
  local i = string.find(member, '/', 1, true)
  return string.sub(member, 1, i - 1), string.sub(member, i + 1)
end

-- Members of an incarnation set: JSON, because user ids are opaque strings.
local function pair(user, session) return cjson.encode({user, session}) end

-- Brings the shared state in line after entries of `user` were removed.
-- With a live entry left, the online score goes back to the latest expiry
-- (it may have come from the removed entry). Without one the user is
-- offline: their expired leftovers go too, so that whichever close got here
-- is the one that announces it, and a later close of a leftover finds
-- nothing. Returns true when the user went offline.
local function settle(user, now)
  local sk = skey(user)
  if redis.call('ZCOUNT', sk, now, '+inf') > 0 then
    local top = redis.call('ZRANGE', sk, -1, -1, 'WITHSCORES')
    redis.call('ZADD', ONLINE, top[2], user)
    return false
  end
  for _, member in ipairs(redis.call('ZRANGE', sk, 0, -1)) do
    local inc, session = split(member)
    redis.call('SREM', ikey(inc), pair(user, session))
  end
  redis.call('DEL', sk, lkey(user))
  redis.call('ZREM', ONLINE, user)
  return true
end

