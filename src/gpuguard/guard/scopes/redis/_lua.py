"""The Redis lease's transitions, as one Lua script: each call is atomic on the server.

Keys, all under one prefix ``P`` (a hash tag, so a cluster keeps them in one slot):

* ``P:holder``   the grant: JSON ``{t: ticket id, f: fence, g: granted_ms, h: hung_ms,
  ticket: its details}``, with a TTL (``PX``) kept alive by the holder's heartbeat; gone means
  nobody holds (and nothing of the grant is left behind).
* ``P:fence``    the last fencing token. A grant takes ``max(last + 1, Redis TIME in ms)``,
  so tokens keep increasing even across a Redis restart that lost its data.
* ``P:q:<p>``    one sorted set per declared priority (score: arrival number ``P:seq``),
  the FIFO lines of :class:`gpuguard.guard._queue.WaiterQueue`.
* ``P:tickets``  waiting ticket id -> JSON (owner, operation, priority, arrival time, TTL).
* ``P:client:<c>`` a waiting process's liveness (TTL, heartbeat); a waiter whose process
  stopped beating is dropped from the line when its turn comes.
* ``P:ver``      bumped on every change, so readers keep the newest view; it starts from
  Redis ``TIME`` in microseconds, so it keeps increasing across a restart that lost it.

Every grant is published as ``grant <ticket> <fence>`` on the granted process's own channel
``P:events:<c>`` only: the next waiter is woken by that push, never by polling (the push only
makes it read the state: this script decides), and the others are not woken at all. A change
that leaves the lease free with nobody waiting is published as ``free <version>`` on
``P:events``, for every process's view. Each call runs a bounded number of Redis commands,
and reads a bounded part of the line, whatever its length: the answer lists the first 32
waiters in service order, how many wait, and which of the caller's tickets (``ARGV[9]``) are
still in line. Only a request that finds the line full looks at every waiter, for dead ones
to drop before refusing.
A ``beat`` of a holder whose grant Redis forgot with every key (no ``P:fence``: nobody was
granted since) re-asserts that grant. Times come from Redis ``TIME`` unless the caller
passes ``now`` (tests on a fake clock). Service order mirrors
:func:`gpuguard.guard._queue.effective_priority`: a waiter rises one level per ``aging_ms``
waited (capped at interactive); FIFO within a level.
"""

from __future__ import annotations

from typing import Final

__all__ = ["LEASE_SCRIPT"]

LEASE_SCRIPT: Final = r"""
local P = KEYS[1]
local op, tid = ARGV[1], ARGV[2]
local aging = tonumber(ARGV[4])
local arg = ARGV[5]
local t = redis.call('TIME')
local real_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local now = real_ms
if ARGV[3] ~= '' then now = tonumber(ARGV[3]) end
local HOLDER, TICKETS = P .. ':holder', P .. ':tickets'
local QUEUES = {P .. ':q:0', P .. ':q:1', P .. ':q:2'}

local function eff(prio, enq)
  if aging <= 0 or prio >= 2 then return prio end
  return math.min(2, prio + math.floor((now - enq + 0.001) / aging))
end

local function ticket(id)
  local raw = redis.call('HGET', TICKETS, id)
  if raw then return cjson.decode(raw) end
  return nil
end

local function holder()
  local raw = redis.call('GET', HOLDER)
  if raw then return cjson.decode(raw) end
  return nil
end

local function alive(tk)
  return redis.call('EXISTS', P .. ':client:' .. tk.c) == 1
end

-- Versions start from Redis TIME (in us) when the key is missing, so a Redis that lost its
-- data still reports versions newer than any it reported before.
local dirty = false
local function changed()
  if not dirty then redis.call('SET', P .. ':ver', string.format('%d', real_ms * 1000), 'NX') end
  redis.call('INCR', P .. ':ver')
  dirty = true
end

-- The details of tickets ``ids`` (false for one that is gone), in one HMGET per 1,000.
local function details(ids)
  local out = {}
  for i = 1, #ids, 1000 do
    local part = redis.call('HMGET', TICKETS, unpack(ids, i, math.min(i + 999, #ids)))
    for j = 1, #part do out[#out + 1] = part[j] end
  end
  return out
end

-- The first ``count`` waiters of line ``p`` (1-3; -1: all): ids, arrival numbers, details.
local function line(p, count)
  local raw = redis.call('ZRANGE', QUEUES[p], 0, count - 1, 'WITHSCORES')
  local ids, seqs = {}, {}
  for i = 1, #raw, 2 do
    ids[#ids + 1], seqs[#seqs + 1] = raw[i], tonumber(raw[i + 1])
  end
  return ids, seqs, details(ids)
end

-- Drop waiters whose process stopped beating (only when the line looks full: O(waiters)).
local function purge()
  for p = 1, 3 do
    local ids, _, raws = line(p, 0)
    for i = 1, #ids do
      if not raws[i] or not alive(cjson.decode(raws[i])) then
        redis.call('ZREM', QUEUES[p], ids[i])
        redis.call('HDEL', TICKETS, ids[i])
        changed()
      end
    end
  end
end

local function queued()
  return redis.call('ZCARD', QUEUES[1]) + redis.call('ZCARD', QUEUES[2])
    + redis.call('ZCARD', QUEUES[3])
end

local function grant(id, tk)
  local fence = math.max((tonumber(redis.call('GET', P .. ':fence')) or 0) + 1, real_ms)
  local f = string.format('%d', fence)
  redis.call('SET', P .. ':fence', f)
  local h = {t = id, f = f, g = now, h = false, ticket = tk}
  redis.call('SET', HOLDER, cjson.encode(h), 'PX', tk.ttl)
  redis.call('ZREM', QUEUES[tk.p + 1], id)
  redis.call('HDEL', TICKETS, id)
  changed()
  redis.call('PUBLISH', P .. ':events:' .. tk.c, 'grant ' .. id .. ' ' .. f)
  return f
end

-- Nobody holds: grant the best head of the three lines (skipping dead waiters).
local function promote()
  if redis.call('EXISTS', HOLDER) == 1 then return end
  while true do
    local best, best_tk, best_rank, best_seq = nil, nil, -1, 0
    for p = 1, 3 do
      local head = redis.call('ZRANGE', QUEUES[p], 0, 0, 'WITHSCORES')
      if head[1] then
        local tk = ticket(head[1])
        if not tk or not alive(tk) then
          redis.call('ZREM', QUEUES[p], head[1])
          redis.call('HDEL', TICKETS, head[1])
          changed()
          best = false
          break
        end
        local rank, seq = eff(tk.p, tk.e), tonumber(head[2])
        if rank > best_rank or (rank == best_rank and seq < best_seq) then
          best, best_tk, best_rank, best_seq = head[1], tk, rank, seq
        end
      end
    end
    if best == nil then return end
    if best then
      grant(best, best_tk)
      return
    end
  end
end

local function release_if(id, fence)
  local h = holder()
  if h and h.t == id and (fence == '' or h.f == fence) then
    redis.call('DEL', HOLDER)
    changed()
    return true
  end
  return false
end

local function unqueue(id)
  local tk = ticket(id)
  if tk and redis.call('ZREM', QUEUES[tk.p + 1], id) == 1 then
    redis.call('HDEL', TICKETS, id)
    changed()
    return true
  end
  return false
end

-- The lease after this call: the holder, the first SHOWN waiters in service order (they are
-- among the first SHOWN of each line: FIFO within a line, and the older rank no lower), how
-- many wait, and which of the caller's tickets (ARGV[9]) are still in line. A change that left
-- the lease free with nobody waiting is announced to every process (a grant was announced
-- to its own process only).
local SHOWN = 32
local function state(result, extra)
  local h, pttl = holder(), redis.call('PTTL', HOLDER)
  local waiters, n = {}, 0
  for p = 1, 3 do
    local ids, seqs, raws = line(p, SHOWN)
    if #ids < SHOWN then n = n + #ids else n = n + redis.call('ZCARD', QUEUES[p]) end
    for i = 1, #ids do
      if raws[i] then
        local tk = cjson.decode(raws[i])
        tk.id, tk.s, tk.r = ids[i], seqs[i], eff(tk.p, tk.e)
        table.insert(waiters, tk)
      end
    end
  end
  table.sort(waiters, function(a, b)
    if a.r ~= b.r then return a.r > b.r end
    return a.s < b.s
  end)
  for i = #waiters, SHOWN + 1, -1 do waiters[i] = nil end
  local ver = redis.call('GET', P .. ':ver') or '0'
  if dirty and not h and n == 0 then redis.call('PUBLISH', P .. ':events', 'free ' .. ver) end
  local mine, listed = {}, {}
  for id in string.gmatch(ARGV[9] or '', '%S+') do mine[#mine + 1] = id end
  local raws = details(mine)
  for i = 1, #mine do
    if raws[i] then listed[#listed + 1] = mine[i] end
  end
  return cjson.encode({
    r = result, x = extra or false, now = now, h = h or false, pttl = pttl,
    w = waiters, n = n, o = listed, v = ver,
  })
end

local function enter(tk)
  tk.e = now
  redis.call('SET', P .. ':client:' .. tk.c, '1', 'PX', tk.ttl)
end

if op == 'beat' and tid ~= '' and redis.call('EXISTS', HOLDER) == 0
    and redis.call('EXISTS', P .. ':fence') == 0 then
  -- Redis lost its data (restarted without persistence) and granted nobody since: the
  -- holder's renewal re-asserts its grant, so nobody is granted beside its running work.
  redis.call('SET', P .. ':fence', ARGV[7])
  local h = {t = tid, f = ARGV[7], g = now, h = false, ticket = cjson.decode(ARGV[8])}
  redis.call('SET', HOLDER, cjson.encode(h), 'PX', ARGV[6])
  changed()
end
promote()
if op == 'acquire' or op == 'enqueue' then
  local tk = cjson.decode(arg)
  local busy = redis.call('EXISTS', HOLDER) == 1 or queued() > 0
  if not busy then
    enter(tk)
    return state('granted', grant(tid, tk))
  end
  if op == 'acquire' then return state('busy') end
  if queued() >= tonumber(ARGV[6]) then purge() end
  if queued() >= tonumber(ARGV[6]) then return state('full') end
  enter(tk)
  redis.call('HSET', TICKETS, tid, cjson.encode(tk))
  redis.call('ZADD', QUEUES[tk.p + 1], redis.call('INCR', P .. ':seq'), tid)
  changed()
  return state('queued')
elseif op == 'withdraw' or op == 'drop' then
  if unqueue(tid) then return state('withdrawn') end
  local h = holder()
  if h and h.t == tid then
    -- Granted meanwhile: 'withdraw' keeps the grant (the caller takes it), 'drop' ends it.
    if op == 'withdraw' then return state('granted', h.f) end
    release_if(tid, '')
    promote()
    return state('released')
  end
  return state('gone')
elseif op == 'release' then
  -- ARGV[6]: waiters of the same process that were cancelled; never grant them.
  for id in string.gmatch(ARGV[6], '%S+') do unqueue(id) end
  if release_if(tid, arg) then
    promote()
    return state('released')
  end
  return state('gone')
elseif op == 'beat' then
  redis.call('SET', P .. ':client:' .. arg, '1', 'PX', ARGV[6])
  if tid ~= '' then
    local h = holder()
    if not h or h.t ~= tid or h.f ~= ARGV[7] then return state('lost') end
    redis.call('PEXPIRE', HOLDER, ARGV[6])
  end
  return state('ok')
elseif op == 'hung' then
  local h = holder()
  if h and h.t == tid then
    h.h = now
    redis.call('SET', HOLDER, cjson.encode(h), 'KEEPTTL')
    changed()
  end
  return state('ok')
end
return state('ok')
"""
