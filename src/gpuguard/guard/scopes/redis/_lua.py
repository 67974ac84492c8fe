"""The Redis lease's transitions, as one Lua script: each call is atomic on the server.

Keys, all under one prefix ``P`` (a hash tag, so a cluster keeps them in one slot):

* ``P:holder``   the grant: JSON ``{t: ticket, f: fence, g: granted_ms, h: hung_ms}``, with a
  TTL (``PX``) kept alive by the holder's heartbeat; gone means nobody holds.
* ``P:fence``    the last fencing token. A grant takes ``max(last + 1, Redis TIME in ms)``,
  so tokens keep increasing even across a Redis restart that lost its data.
* ``P:q:<p>``    one sorted set per declared priority (score: arrival number ``P:seq``),
  the FIFO lines of :class:`gpuguard.guard._queue.WaiterQueue`.
* ``P:tickets``  ticket id -> JSON (owner, operation, priority, arrival time, TTL to grant).
* ``P:client:<c>`` a waiting process's liveness (TTL, heartbeat); a waiter whose process
  stopped beating is dropped from the line when its turn comes.
* ``P:ver``      bumped on every change, so readers keep the newest view; it starts from
  Redis ``TIME`` in microseconds, so it keeps increasing across a restart that lost it.

Every grant is published on ``P:events`` as ``grant <ticket> <fence>``: waiters are woken by
that push, never by polling (the push only makes them read the state: this script decides).
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
local dirty, announced = false, false
local function changed()
  if not dirty then redis.call('SET', P .. ':ver', string.format('%d', real_ms * 1000), 'NX') end
  redis.call('INCR', P .. ':ver')
  dirty = true
end

-- Drop waiters whose process stopped beating, and tickets nobody waits on or holds.
local function purge()
  local h = holder()
  local all = redis.call('HGETALL', TICKETS)
  for i = 1, #all, 2 do
    local id, tk = all[i], cjson.decode(all[i + 1])
    local queued = redis.call('ZSCORE', QUEUES[tk.p + 1], id)
    if (queued and not alive(tk)) or (not queued and (not h or h.t ~= id)) then
      redis.call('ZREM', QUEUES[tk.p + 1], id)
      redis.call('HDEL', TICKETS, id)
      changed()
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
  redis.call('SET', HOLDER, cjson.encode({t = id, f = f, g = now, h = false}), 'PX', tk.ttl)
  redis.call('ZREM', QUEUES[tk.p + 1], id)
  changed()
  redis.call('PUBLISH', P .. ':events', 'grant ' .. id .. ' ' .. f)
  announced = true
  return f
end

-- Nobody holds: grant the best head of the three lines (skipping dead waiters).
local function promote()
  if redis.call('EXISTS', HOLDER) == 1 then return end
  purge()  -- also forgets the ticket of a holder whose grant expired
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
    redis.call('HDEL', TICKETS, id)
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

-- Every change is announced: a grant names its ticket, anything else just says so.
local function state(result, extra)
  if dirty and not announced then redis.call('PUBLISH', P .. ':events', 'changed') end
  local h, pttl = holder(), redis.call('PTTL', HOLDER)
  if h then h.ticket = ticket(h.t) end
  local waiters = {}
  for p = 1, 3 do
    local ids = redis.call('ZRANGE', QUEUES[p], 0, -1, 'WITHSCORES')
    for i = 1, #ids, 2 do
      local tk = ticket(ids[i])
      if tk then
        tk.id, tk.s, tk.r = ids[i], tonumber(ids[i + 1]), eff(tk.p, tk.e)
        table.insert(waiters, tk)
      end
    end
  end
  table.sort(waiters, function(a, b)
    if a.r ~= b.r then return a.r > b.r end
    return a.s < b.s
  end)
  return cjson.encode({
    r = result, x = extra or false, now = now, h = h or false, pttl = pttl,
    w = waiters, v = redis.call('GET', P .. ':ver') or '0',
  })
end

local function enter(tk)
  tk.e = now
  redis.call('HSET', TICKETS, tid, cjson.encode(tk))
  redis.call('SET', P .. ':client:' .. tk.c, '1', 'PX', tk.ttl)
end

if op == 'beat' and tid ~= '' and redis.call('EXISTS', HOLDER) == 0
    and redis.call('EXISTS', P .. ':fence') == 0 then
  -- Redis lost its data (restarted without persistence) and granted nobody since: the
  -- holder's renewal re-asserts its grant, so nobody is granted beside its running work.
  redis.call('SET', P .. ':fence', ARGV[7])
  redis.call('HSET', TICKETS, tid, ARGV[8])
  redis.call('SET', HOLDER, cjson.encode({t = tid, f = ARGV[7], g = now, h = false}), 'PX', ARGV[6])
  changed()
end
promote()
if op == 'acquire' or op == 'enqueue' then
  local tk = cjson.decode(arg)
  purge()
  local busy = redis.call('EXISTS', HOLDER) == 1 or queued() > 0
  if not busy then
    enter(tk)
    return state('granted', grant(tid, tk))
  end
  if op == 'acquire' then return state('busy') end
  if queued() >= tonumber(ARGV[6]) then return state('full') end
  enter(tk)
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
