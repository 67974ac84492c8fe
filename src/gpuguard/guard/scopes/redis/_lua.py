"""The Redis lease's transitions, as one Lua script: each call is atomic on the server.

Keys, all under one prefix ``P`` (a hash tag, so a cluster keeps them in one slot):

* ``P:holders``  the grants, by ticket id: JSON ``{t: ticket id, f: fence, g: granted_ms,
  h: hung_ms, u: until (Redis ms), ticket: its details}``. A grant lapses when Redis ``TIME``
  passes its ``u`` (renewed by its holder's heartbeat); the hash itself expires a teardown
  bound after its last grant (nothing of the grants is left behind), and keeps the holder of
  a grant that lapsed meanwhile as ``teardown``, for the next holder to wait for its GPU
  context (:mod:`._lua_grants`). One grant under the exclusive policy; under a sharing one,
  the ledger: every holder with the bytes it counts (``ticket.b``).
* ``P:fence``    the last fencing token. A grant takes ``max(last + 1, Redis TIME in ms)``,
  so tokens keep increasing even across a Redis restart that lost its data.
* ``P:q:<p>``    one sorted set per declared priority (score: arrival number ``P:seq``),
  the FIFO lines of :class:`gpuguard.guard._queue.WaiterQueue`.
* ``P:tickets``  waiting ticket id -> JSON (owner, operation, priority, arrival time, TTL).
* ``P:client:<c>`` a waiting process's liveness (TTL, heartbeat); a waiter whose process
  stopped beating is dropped from the line when its turn comes.
* ``P:ver``      bumped on every change, so readers keep the newest view; it starts from
  Redis ``TIME`` in microseconds, so it keeps increasing across a restart that lost it.

Every grant is published on its process's own channel ``P:events:<c>`` only, as ``grant
<ticket> <fence> <floor> <until ms> <version> <mac>``, signed with that process's secret
(``ticket.k``, never in an answer): the next waiter is woken by that push, never by polling,
and takes a grant made alone from it (anyone may publish; only this script signs); nobody
else is woken. While a dead holder's teardown may be under way the grant is published
unsigned, as ``grant <ticket> <fence>``: a hint, on which the process reads the state, which
names the dead holder. A change that leaves the lease free with nobody waiting is published
as ``free <version>`` on ``P:events``, for every process's view. Each call runs a bounded
number of Redis commands, and reads a bounded part of the line, whatever its length: the
answer lists the first 32 waiters in service order, how many wait, which of the caller's
tickets (``ARGV[9]``) are still in line, and the dead holder whose teardown may still be under
way (``d``). Only a request that finds the line full looks at every waiter, for dead ones to
drop before refusing.
The heads of the line are granted while they *fit* beside the holders (see "Big GPUs on
the Redis lease" in docs/design.md): with nobody holding, always; else only if the head and
every holder declared their bytes, the head is not a second load or unload (``ticket.tr``),
and the bytes of all fit the room the head's process measured on the GPU (``ticket.room``:
its memory less the headroom and what others use). A ticket without bytes (the exclusive
policy sends none) runs alone. A head that does not fit holds back everyone behind it.
A ``beat`` renews each grant it names (``ARGV[8]``) and answers ``lost`` with the ones that
are gone; a process whose grants Redis forgot with every key (no ``P:fence``: nobody was
granted since) re-asserts them. Times come from Redis ``TIME`` unless the caller
passes ``now`` (tests on a fake clock). Service order mirrors
:func:`gpuguard.guard._queue.effective_priority`: a waiter rises one level per ``aging_ms``
waited (capped at interactive); FIFO within a level.
"""

from __future__ import annotations

from typing import Final

from ._lua_grants import GRANTS

__all__ = ["LEASE_SCRIPT"]

_HEAD: Final = r"""
local P = KEYS[1]
local op, tid = ARGV[1], ARGV[2]
local aging = tonumber(ARGV[4])
local arg = ARGV[5]
local t = redis.call('TIME')
local real_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local now = real_ms
if ARGV[3] ~= '' then now = tonumber(ARGV[3]) end
local HOLDERS, TICKETS = P .. ':holders', P .. ':tickets'
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

local function alive(tk)
  return redis.call('EXISTS', P .. ':client:' .. tk.c) == 1
end

-- Versions start from Redis TIME (in us) when the key is missing, so a Redis that lost its
-- data still reports versions newer than any it reported before.
local dirty = false
local function changed()
  if not dirty then redis.call('SET', P .. ':ver', string.format('%d', real_ms * 1000), 'NX') end
  dirty = true
  return redis.call('INCR', P .. ':ver')
end

"""

_BODY: Final = r"""
local function shares(tk)
  return type(tk.b) == 'number' and not tk.alone
end

-- May tk start beside the holders? Always when nobody holds; else only if it and every
-- holder declared their bytes, it is not a second load or unload, and the sum fits its room.
local function fits(tk)
  local hs = holders()
  if #hs == 0 then return true end
  if not shares(tk) or type(tk.room) ~= 'number' then return false end
  local sum = tk.b
  for _, h in ipairs(hs) do
    if not shares(h.ticket) or (tk.tr and h.ticket.tr) then return false end
    sum = sum + h.ticket.b
  end
  return sum <= tk.room
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
  local lo = f  -- the oldest token still holding beside it (the fence book's floor)
  for _, h in ipairs(holders()) do
    if tonumber(h.f) < tonumber(lo) then lo = h.f end
  end
  keep({t = id, f = f, lo = lo, g = now, h = false, u = real_ms + tk.ttl, ticket = tk})
  redis.call('ZREM', QUEUES[tk.p + 1], id)
  redis.call('HDEL', TICKETS, id)
  local note = string.format('%s %s %s %d %d', id, f, lo, real_ms + tk.ttl, changed())
  local k = tk.k or ''  -- the MAC: sha1(k .. sha1(k .. note)), as _mirror.heard_grant checks
  if dead then  -- a hint only: the grantee reads the state, which names the dead holder
    redis.call('PUBLISH', P .. ':events:' .. tk.c, 'grant ' .. id .. ' ' .. f)
  else
    redis.call('PUBLISH', P .. ':events:' .. tk.c, 'grant ' .. note .. ' '
      .. redis.sha1hex(k .. redis.sha1hex(k .. note)))
  end
  return f
end

-- Grant the best head of the three lines (skipping dead waiters), again and again while it
-- fits beside the holders; a head that does not fit holds back everyone behind it.
local function promote()
  while true do
    for _, h in ipairs(holders()) do
      if not shares(h.ticket) then return end  -- it runs alone
    end
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
      if not fits(best_tk) then return end
      grant(best, best_tk)
    end
  end
end

local function release_if(id, fence)
  local h = holder(id)
  if h and (fence == '' or h.f == fence) then
    unkeep(id)
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

-- The lease after this call: the holders (with the ms each has left), the first SHOWN
-- waiters in service order (they are among the first SHOWN of each line: FIFO within a line,
-- and the older rank no lower), how many wait, and which of the caller's tickets (ARGV[9])
-- are still in line. A change that left the lease free with nobody waiting is announced to
-- every process (a grant was announced to its own process only).
local SHOWN = 32
local function state(result, extra)
  local hs = holders()
  for _, h in ipairs(hs) do h.pttl, h.ticket.k = h.u - real_ms, nil end
  local waiters, n = {}, 0
  for p = 1, 3 do
    local ids, seqs, raws = line(p, SHOWN)
    if #ids < SHOWN then n = n + #ids else n = n + redis.call('ZCARD', QUEUES[p]) end
    for i = 1, #ids do
      if raws[i] then
        local tk = cjson.decode(raws[i])
        tk.id, tk.s, tk.r, tk.k = ids[i], seqs[i], eff(tk.p, tk.e), nil
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
  if dirty and #hs == 0 and n == 0 then redis.call('PUBLISH', P .. ':events', 'free ' .. ver) end
  local mine, listed = {}, {}
  for id in string.gmatch(ARGV[9] or '', '%S+') do mine[#mine + 1] = id end
  local raws = details(mine)
  for i = 1, #mine do
    if raws[i] then listed[#listed + 1] = mine[i] end
  end
  return cjson.encode({
    r = result, x = extra or false, now = now, t = real_ms, h = hs, w = waiters, n = n,
    o = listed, v = ver, d = mourned(),
  })
end

local function enter(tk)
  tk.e = now
  redis.call('SET', P .. ':client:' .. tk.c, '1', 'PX', tk.ttl)
end

if op == 'beat' and ARGV[8] ~= '' and redis.call('EXISTS', P .. ':fence') == 0 then
  -- Redis lost its data (restarted without persistence) and granted nobody since: the
  -- holder's renewal re-asserts its grants, so nobody is granted beside its running work.
  local top = 0
  for _, g in ipairs(cjson.decode(ARGV[8])) do
    keep({t = g[1], f = g[2], g = now, h = false, u = real_ms + tonumber(ARGV[6]), ticket = g[3]})
    top = math.max(top, tonumber(g[2]))
  end
  redis.call('SET', P .. ':fence', string.format('%d', top))
  changed()
end
promote()
if op == 'acquire' or op == 'enqueue' then
  local tk = cjson.decode(arg)
  if queued() == 0 and fits(tk) then
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
  local h = holder(tid)
  if h then
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
elseif op == 'requeue' then
  -- Its own process refused the grant beside the others (its GPU said no): back to the
  -- head of its line, to be granted alone (everyone behind it waits for that).
  local h = holder(tid)
  if h and h.f == arg then
    unkeep(tid)
    local tk = h.ticket
    tk.alone = true
    local q = QUEUES[tk.p + 1]
    local head = redis.call('ZRANGE', q, 0, 0, 'WITHSCORES')
    local seq = head[2] and tonumber(head[2]) - 1 or redis.call('INCR', P .. ':seq')
    redis.call('SET', P .. ':client:' .. tk.c, '1', 'PX', tk.ttl)
    redis.call('HSET', TICKETS, tid, cjson.encode(tk))
    redis.call('ZADD', q, seq, tid)
    promote()
    return state('queued')
  end
  return state('gone')
elseif op == 'beat' then
  redis.call('SET', P .. ':client:' .. arg, '1', 'PX', ARGV[6])
  local lost = {}
  if ARGV[8] ~= '' then
    for _, g in ipairs(cjson.decode(ARGV[8])) do
      local h = holder(g[1])
      if h and h.f == g[2] then
        h.u = real_ms + tonumber(ARGV[6])
        store(h)
      else
        lost[#lost + 1] = g[1]
      end
    end
  end
  if #lost > 0 then return state('lost', table.concat(lost, ' ')) end
  return state('ok')
elseif op == 'hung' then
  local h = holder(tid)
  if h then
    h.h = now
    redis.call('HSET', HOLDERS, tid, cjson.encode(h))
    changed()
  end
  return state('ok')
end
return state('ok')
"""

LEASE_SCRIPT: Final = _HEAD + GRANTS + _BODY
"""The script: its head (keys, time, versions), the grants (:mod:`._lua_grants`), the rest."""
