"""Lua sources run inside Redis; each call is atomic, so concurrent web processes cannot over-admit.

LIMITS_LUA keeps one hash per customer (``KEYS[1]``), so a call touches exactly one declared key
(cluster-safe with the ``{customer}`` hash tag) and the whole check-then-consume is one step:

  tok, ts   token bucket for the per-minute limit (tokens as a float, ts in microseconds)
  mid, mn   calendar UTC minute id and the units admitted in it (reported as requests_this_minute)
  did, dn   calendar UTC day id (days since epoch) and units admitted that day
  oid, on   calendar UTC month id (YYYYMM) and units admitted that month

A counter whose stored window id is not the current one reads as 0: windows roll over lazily,
with no cron and no per-window key to expire.

Time is in integer microseconds (< 2**53, exact in Lua's doubles), from Redis ``TIME`` unless
the caller passes ``now`` (tests), so every web process sees the same clock.
"""

LIMITS_LUA = r"""
-- ARGV: mode (hit|peek|refund), cost, now_us ('' = server TIME), per_minute, per_day, per_month
--       (0 = unlimited), then for refund the minute/day/month window ids charged ('' = current).
-- Returns {allowed, refused_mask, binding_bit, wait_us (-1 = never),
--          min_remaining, min_reset_us, min_used, day_remaining, day_reset_us, day_used,
--          mon_remaining, mon_reset_us, mon_used, min_id, day_id, mon_id};
--         remaining -1 = unlimited.
local MIN_US = 60000000
local DAY_US = 86400000000
local floor = math.floor

-- Howard Hinnant's civil calendar algorithms (proleptic Gregorian, UTC).
local function civil_from_days(z)
  z = z + 719468
  local era = floor(z / 146097)
  local doe = z - era * 146097
  local yoe = floor((doe - floor(doe / 1460) + floor(doe / 36524) - floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + floor(yoe / 4) - floor(yoe / 100))
  local mp = floor((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y, m
end

local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = floor(y / 400)
  local yoe = y - era * 400
  local mp = m > 2 and m - 3 or m + 9
  local doy = floor((153 * mp + 2) / 5) + d - 1
  return era * 146097 + yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy - 719468
end

local mode = ARGV[1]
local cost = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local lim_min, lim_day, lim_mon = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])

local min_id = floor(now / MIN_US)
local day_id = floor(now / DAY_US)
local y, m = civil_from_days(day_id)
local mon_id = y * 100 + m
if m == 12 then y, m = y + 1, 1 else m = m + 1 end
local day_end = (day_id + 1) * DAY_US
local mon_end = days_from_civil(y, m, 1) * DAY_US

local st = redis.call('HMGET', KEYS[1], 'tok', 'ts', 'mid', 'mn', 'did', 'dn', 'oid', 'on')
local function used(id, n, current)
  if tonumber(id) == current then return tonumber(n) or 0 end
  return 0
end
local min_n = used(st[3], st[4], min_id)
local day_n = used(st[5], st[6], day_id)
local mon_n = used(st[7], st[8], mon_id)

-- Refill the bucket up to now; a missing bucket is full. Elapsed is clamped so a clock step
-- backwards cannot drain tokens and a long idle period cannot overflow the arithmetic.
local tokens = lim_min
local tok, ts = tonumber(st[1]), tonumber(st[2])
if lim_min > 0 and tok and ts then
  local elapsed = math.min(math.max(now - ts, 0), MIN_US)
  tokens = math.min(lim_min, tok + elapsed * lim_min / MIN_US)
end

-- Phase 1: check every limit; nothing is written unless all of them admit the request.
local refused, binding, wait = 0, 0, 0
local function refuse(bit, w)
  refused = refused + bit
  if wait >= 0 and (w < 0 or w > wait) then wait, binding = w, bit end
end
if mode ~= 'refund' then
  if lim_min > 0 and tokens < cost then
    refuse(1, cost > lim_min and -1 or math.ceil((cost - tokens) * MIN_US / lim_min))
  end
  if lim_day > 0 and day_n + cost > lim_day then
    refuse(2, cost > lim_day and -1 or day_end - now)
  end
  if lim_mon > 0 and mon_n + cost > lim_mon then
    refuse(4, cost > lim_mon and -1 or mon_end - now)
  end
end

-- Phase 2: consume from (or give back to) all windows together.
local write = false
if mode == 'hit' and refused == 0 then
  if lim_min > 0 then tokens = tokens - cost end
  min_n, day_n, mon_n = min_n + cost, day_n + cost, mon_n + cost
  write = true
elseif mode == 'refund' then
  if lim_min > 0 then tokens = math.min(lim_min, tokens + cost) end
  -- Only give back to the window that was charged: after a rollover there is nothing to return.
  if ARGV[7] == '' or tonumber(ARGV[7]) == min_id then min_n = math.max(min_n - cost, 0) end
  if ARGV[8] == '' or tonumber(ARGV[8]) == day_id then day_n = math.max(day_n - cost, 0) end
  if ARGV[9] == '' or tonumber(ARGV[9]) == mon_id then mon_n = math.max(mon_n - cost, 0) end
  write = true
end
if write then
  if lim_min > 0 then
    redis.call('HSET', KEYS[1], 'tok', string.format('%.17g', tokens),
               'ts', string.format('%.0f', now))
  end
  redis.call('HSET', KEYS[1], 'mid', string.format('%.0f', min_id), 'mn', min_n,
             'did', string.format('%.0f', day_id), 'dn', day_n, 'oid', mon_id, 'on', mon_n)
  -- Keep the hash a day past the month end so late refunds and usage reads still find it.
  redis.call('EXPIRE', KEYS[1], math.ceil((mon_end - now) / 1000000) + 86400)
end

local function remaining(limit, n)
  if limit > 0 then return math.max(limit - n, 0) end
  return -1
end
local min_rem, min_reset = -1, 0
if lim_min > 0 then
  min_rem = floor(tokens)
  min_reset = math.ceil((lim_min - tokens) * MIN_US / lim_min)  -- until the bucket is full
end
return {refused == 0 and 1 or 0, refused, binding, wait,
        min_rem, min_reset, min_n,
        remaining(lim_day, day_n), day_end - now, day_n,
        remaining(lim_mon, mon_n), mon_end - now, mon_n,
        min_id, day_id, mon_id}
"""

INFLIGHT_LUA = r"""
-- KEYS[1]: sorted set job_id -> lease expiry (ms). ARGV: mode (acquire|touch|count), job_id,
-- cap (<= 0 = unlimited), ttl_ms, now_ms ('' = server TIME). Returns {ok, count}.
local now = tonumber(ARGV[5])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local mode, job, cap, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
if mode == 'count' then
  return {1, redis.call('ZCOUNT', KEYS[1], '(' .. string.format('%.0f', now), '+inf')}
end
-- Leases that ran out belong to crashed or lost jobs: drop them before counting.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local ok = 0
if redis.call('ZSCORE', KEYS[1], job) then
  -- A redelivered job (at-least-once) renews its own slot instead of taking a second one.
  ok = 1
elseif mode == 'acquire' and (cap <= 0 or redis.call('ZCARD', KEYS[1]) < cap) then
  ok = 1
end
if ok == 1 then
  redis.call('ZADD', KEYS[1], now + ttl, job)
  local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  redis.call('PEXPIRE', KEYS[1], math.max(tonumber(last[2]) - now, 1))
end
return {ok, redis.call('ZCARD', KEYS[1])}
"""
