/*
 * fed_lua.h: private; the two Lua scripts the federation runs in Redis
 * (fed.c).  Each is one atomic operation on one tollgate key, reads the
 * clock with TIME in Redis (no host's clock touches the budget) and
 * names every Redis key it touches in KEYS, all under one hash tag,
 * {FEDERATION:KEY}, so that a Redis Cluster could run it on one node.
 * Times in Redis are microseconds of Redis's clock.
 */
#ifndef TG_FED_LUA_H
#define TG_FED_LUA_H

/*
 * LEASE: take slices of a key's limits.
 *
 * KEYS[1]  {tag}:d  hash: def (the definition in force), seen (when a
 *          broker with that definition last leased), pause (until)
 * KEYS[2]  {tag}:h  hash: host -> when it last leased
 * KEYS[3+] {tag}:lN one per limit: a rate's TAT (a string), or a
 *          window's sub-window counts (a hash, sub-window -> units)
 * ARGV     host, def, life_us, idle_us, then per limit: kind, count,
 *          period_us, burst, ask
 *
 * The definition in force is the first written; a broker whose
 * definition differs is told (disagree = 1) and leases under the one in
 * force, until no broker with that one has leased for idle_us: then the
 * next broker's replaces it, so a changed config rolls out by itself.
 *
 * A rate limit is a GCRA on Redis's clock: a grant of g units moves its
 * TAT by g units' cost at once (pre-debit); what a broker does not spend
 * before the slice ends is lost to the fleet, never handed out twice.
 * One grant is at most the host's part of a bucket and a slice's life,
 * (burst + rate * life) / hosts.  Hosts that lease share the rate: each
 * has a bucket of its own in d (field t:HOST:N, its TAT) that fills at
 * the rate / hosts, and while the key's bucket is less than half full a
 * host gets no more than its own holds, so hungry hosts get equal parts.
 * A host that wants less than its part leaves the rest in the key's
 * bucket, which then fills past half, and whoever asks takes it.
 *
 * A window limit counts a grant in the sub-window that the slice's end
 * falls in, plus one: each unit is then counted in Redis from its grant
 * until a whole period after the latest moment it can be spent, so the
 * fleet never spends more than count in any window.  Its hash also holds
 * `born', when Redis first saw it, and `quiet': a window born anew (a
 * Redis that lost its data, or the first lease) grants nothing for two
 * slice lives, while the brokers, seeing a born unlike the one they
 * knew, put back what they were granted in it (RESTORE below).  Brokers
 * with no demand ask for nothing (ask 0) once a slice life to learn it.
 * Only a host that asks counts among the hosts.
 *
 * Returns { now, pause_left, disagree, hosts, (granted, eta, at, born)
 * per limit }: eta the microseconds until a refused ask could be
 * granted; for a window, at the sub-window it counted a grant in, and
 * born.
 */
#define FED_LUA_LEASE \
"local t = redis.call('TIME')\n" \
"local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n" \
"local host, def = ARGV[1], ARGV[2]\n" \
"local life, idle = tonumber(ARGV[3]), tonumber(ARGV[4])\n" \
"local n = #KEYS - 2\n" \
"local lim = {}\n" \
"local maxper = 0\n" \
"for i = 1, n do\n" \
"  local b = 4 + (i - 1) * 5\n" \
"  lim[i] = { tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]),\n" \
"    tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4]), tonumber(ARGV[b + 5]) }\n" \
"end\n" \
"local d = redis.call('HMGET', KEYS[1], 'def', 'seen', 'pause')\n" \
"local disagree = 0\n" \
"if d[1] == false or d[1] == def or now - tonumber(d[2] or '0') > idle then\n" \
"  redis.call('HSET', KEYS[1], 'def', def, 'seen',\n" \
"    string.format('%.0f', now))\n" \
"else\n" \
"  disagree = 1\n" \
"  local alt, j = {}, 0\n" \
"  for k, c, p, b in string.gmatch(d[1], '(%d+):(%d+):(%d+):(%d+)') do\n" \
"    j = j + 1\n" \
"    alt[j] = { tonumber(k), tonumber(c), tonumber(p), tonumber(b) }\n" \
"  end\n" \
"  if j == n then\n" \
"    for i = 1, n do\n" \
"      if alt[i][1] == lim[i][1] and alt[i][2] > 0 and alt[i][3] > 0 then\n" \
"        lim[i][2], lim[i][3], lim[i][4] = alt[i][2], alt[i][3], alt[i][4]\n" \
"      end\n" \
"    end\n" \
"  end\n" \
"end\n" \
"local pause = tonumber(d[3] or '0')\n" \
"local asks = false\n" \
"for i = 1, n do if lim[i][5] > 0 then asks = true end end\n" \
"if asks then\n" \
"  redis.call('HSET', KEYS[2], host, string.format('%.0f', now))\n" \
"end\n" \
"local hs = redis.call('HGETALL', KEYS[2])\n" \
"local hosts = 0\n" \
"for j = 1, #hs, 2 do\n" \
"  if now - tonumber(hs[j + 1]) > 2 * life then\n" \
"    redis.call('HDEL', KEYS[2], hs[j])\n" \
"    for i = 1, n do\n" \
"      redis.call('HDEL', KEYS[1], 't:' .. hs[j] .. ':' .. i)\n" \
"    end\n" \
"  else\n" \
"    hosts = hosts + 1\n" \
"  end\n" \
"end\n" \
"redis.call('PEXPIRE', KEYS[2], math.ceil(10 * life / 1000))\n" \
"if hosts < 1 then hosts = 1 end\n" \
"local out = { now, pause > now and pause - now or 0, disagree, hosts }\n" \
"for i = 1, n do\n" \
"  local kind, count, per, burst, ask = lim[i][1], lim[i][2], lim[i][3],\n" \
"    lim[i][4], lim[i][5]\n" \
"  local g, eta, at, born = 0, 0, 0, 0\n" \
"  if per > maxper then maxper = per end\n" \
"  if kind == 1 then\n" \
"    local T = per / count\n" \
"    local tau = burst * T\n" \
"    local tat = tonumber(redis.call('GET', KEYS[2 + i]) or '0')\n" \
"    if tat < now then tat = now end\n" \
"    local avail = math.floor((now + tau - tat) / T + 1e-9)\n" \
"    local share = math.max(1,\n" \
"      math.ceil((burst + count * life / per) / hosts))\n" \
"    local tf = 't:' .. host .. ':' .. i\n" \
"    local Th = T * hosts\n" \
"    local tauh = math.max(ask, 1) * Th\n" \
"    local th = tonumber(redis.call('HGET', KEYS[1], tf) or '0')\n" \
"    if th < now then th = now end\n" \
"    local availh = math.floor((now + tauh - th) / Th + 1e-9)\n" \
"    g = math.max(0, math.min(ask, avail, share))\n" \
"    if avail < math.ceil(burst / 2) then\n" \
"      g = math.max(0, math.min(g, availh))\n" \
"    end\n" \
"    th = math.min(th + g * Th, now + 2 * tauh)\n" \
"    redis.call('HSET', KEYS[1], tf, string.format('%.0f', th))\n" \
"    if g > 0 then\n" \
"      tat = tat + g * T\n" \
"      redis.call('SET', KEYS[2 + i], string.format('%.0f', tat), 'PX',\n" \
"        math.ceil((tat - now) / 1000) + 1000)\n" \
"    else\n" \
"      eta = math.max(math.ceil(T), math.ceil(tat + T - tau - now))\n" \
"    end\n" \
"  elseif kind == 2 then\n" \
"    local sub = per / 64\n" \
"    local idx = math.floor(now / sub)\n" \
"    local ws = redis.call('HGETALL', KEYS[2 + i])\n" \
"    local sum, oldest, quiet = 0, nil, 0\n" \
"    for j = 1, #ws, 2 do\n" \
"      local f = ws[j]\n" \
"      if f == 'born' then\n" \
"        born = tonumber(ws[j + 1])\n" \
"      elseif f == 'quiet' then\n" \
"        quiet = tonumber(ws[j + 1])\n" \
"      else\n" \
"        local b = tonumber(f)\n" \
"        if b <= idx - 64 then\n" \
"          redis.call('HDEL', KEYS[2 + i], f)\n" \
"        else\n" \
"          sum = sum + tonumber(ws[j + 1])\n" \
"          if oldest == nil or b < oldest then oldest = b end\n" \
"        end\n" \
"      end\n" \
"    end\n" \
"    if born == 0 then\n" \
"      born, quiet = now, now + 2 * life\n" \
"      redis.call('HSET', KEYS[2 + i], 'born', string.format('%.0f', born),\n" \
"        'quiet', string.format('%.0f', quiet))\n" \
"    end\n" \
"    if now < quiet then\n" \
"      eta = math.ceil(quiet - now)\n" \
"    else\n" \
"      g = math.max(0, math.min(ask, count - sum))\n" \
"      if g > 0 then\n" \
"        at = math.floor((now + life) / sub) + 1\n" \
"        redis.call('HINCRBY', KEYS[2 + i], string.format('%.0f', at), g)\n" \
"      elseif oldest ~= nil then\n" \
"        eta = math.max(1, math.ceil((oldest + 64) * sub - now))\n" \
"      else\n" \
"        eta = math.ceil(sub)\n" \
"      end\n" \
"    end\n" \
"    redis.call('PEXPIRE', KEYS[2 + i],\n" \
"      math.ceil((per + life + 2 * sub) / 1000))\n" \
"  end\n" \
"  out[#out + 1] = g\n" \
"  out[#out + 1] = eta\n" \
"  out[#out + 1] = at\n" \
"  out[#out + 1] = born\n" \
"end\n" \
"redis.call('PEXPIRE', KEYS[1],\n" \
"  math.ceil((2 * maxper + idle + life) / 1000))\n" \
"return out\n"

/*
 * PAUSE: a broker saw its workers pause the key (a 429, a Retry-After)
 * for left_us: store pause-until on Redis's clock, unless a later one
 * is stored, and publish it to every broker.
 *
 * KEYS[1]  {tag}:d
 * ARGV     left_us, channel, message ("HOST KEY"; " LEFT_US" is added)
 *
 * Returns 1 if it stored and published, 0 if a later pause stood.
 */
#define FED_LUA_PAUSE \
"local t = redis.call('TIME')\n" \
"local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n" \
"local left = tonumber(ARGV[1])\n" \
"local cur = tonumber(redis.call('HGET', KEYS[1], 'pause') or '0')\n" \
"if now + left <= cur then return 0 end\n" \
"redis.call('HSET', KEYS[1], 'pause', string.format('%.0f', now + left))\n" \
"if redis.call('PTTL', KEYS[1]) < math.ceil(left / 1000) + 1000 then\n" \
"  redis.call('PEXPIRE', KEYS[1], math.ceil(left / 1000) + 1000)\n" \
"end\n" \
"redis.call('PUBLISH', ARGV[2],\n" \
"  ARGV[3] .. ' ' .. string.format('%.0f', left))\n" \
"return 1\n"

/*
 * RESTORE: put back what this broker was granted of a window limit that
 * Redis lost (its born is not the one the broker knew), sub-window by
 * sub-window, unless another loss came between (born differs again) or
 * the sub-window has left the window.
 *
 * KEYS[1]  {tag}:lN, the window's hash
 * ARGV     born (as the lease that saw it said), period_us, then pairs
 *          of sub-window and units
 *
 * Returns the units put back, or -1 if born did not match.
 */
#define FED_LUA_RESTORE \
"local t = redis.call('TIME')\n" \
"local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n" \
"local b = redis.call('HGET', KEYS[1], 'born')\n" \
"if b == false or tonumber(b) ~= tonumber(ARGV[1]) then return -1 end\n" \
"local idx = math.floor(now / (tonumber(ARGV[2]) / 64))\n" \
"local n = 0\n" \
"for j = 3, #ARGV - 1, 2 do\n" \
"  if tonumber(ARGV[j]) > idx - 64 then\n" \
"    redis.call('HINCRBY', KEYS[1], ARGV[j], ARGV[j + 1])\n" \
"    n = n + tonumber(ARGV[j + 1])\n" \
"  end\n" \
"end\n" \
"return n\n"

#endif /* TG_FED_LUA_H */
