"""The lease script's grants (``P:holders``) and a dead holder's teardown, in Lua.

Part of :data:`._lua.LEASE_SCRIPT` (it runs after the script's head, which defines ``P``,
``HOLDERS``, ``real_ms`` and ``changed``). Each grant is a field of the hash, by ticket id;
its ticket carries ``td``, its process's teardown bound (ms), and the hash lives that long
past its longest grant, so a grant that lapsed (its holder stopped renewing it: killed, or
cut off) is still read by the next call, which drops it and keeps its holder as the field
``teardown``: ``{pid, host, since, ends}`` (Redis ms: when it lapsed, and ``td`` later). Every
answer carries that record (``d``: pid, host, and ``age``, the ms since it lapsed) until it
ends, so a process granted meanwhile on the dead holder's host waits until the GPU's driver
no longer lists the pid (:mod:`gpuguard.guard.scopes._teardown`). The record has ``u = 0``: a
process of an older gpuguard takes it for a lapsed grant and drops it. One record: a second
holder lapsing replaces the first.
"""

from __future__ import annotations

from typing import Final

__all__ = ["GRANTS"]

GRANTS: Final = r"""
-- The grants that hold now, oldest first, read once per call; a lapsed one is dropped, and
-- its holder kept as the dead holder (the newest one) whose teardown is waited for.
local held, dead = nil, false
local function holders()
  if held then return held end
  held = {}
  local raw, lapsed = redis.call('HGETALL', HOLDERS), false
  for i = 1, #raw, 2 do
    local h = cjson.decode(raw[i + 1])
    if raw[i] == 'teardown' then
      if h.ends <= real_ms then
        redis.call('HDEL', HOLDERS, raw[i])
      elseif not dead or h.since > dead.since then
        dead = h
      end
    elseif h.u > real_ms then
      held[#held + 1] = h
    else
      redis.call('HDEL', HOLDERS, raw[i])
      changed()
      local tk = h.ticket
      if not dead or h.u > dead.since then
        dead = {pid = tk.pid, host = tk.host, since = h.u, ends = h.u + (tk.td or 0), u = 0}
        lapsed = true
      end
    end
  end
  if dead and dead.ends <= real_ms then dead = false end  -- no teardown bound (older gpuguard)
  if lapsed and dead then redis.call('HSET', HOLDERS, 'teardown', cjson.encode(dead)) end
  table.sort(held, function(a, b) return tonumber(a.f) < tonumber(b.f) end)
  return held
end

-- The dead holder for an answer: its pid, its host, and the ms since its grant lapsed.
local function mourned()
  holders()
  if not dead then return false end
  return {pid = dead.pid, host = dead.host, age = real_ms - dead.since}
end

local function holder(id)
  for _, h in ipairs(holders()) do
    if h.t == id then return h end
  end
  return nil
end

-- Write grant h (new or renewed); the hash outlives its longest grant by that grant's
-- teardown bound, and lives at least as long as the dead holder's record.
local function store(h)
  local last = h.u + (h.ticket.td or 0)
  for _, o in ipairs(holders()) do
    last = math.max(last, o.u + (o.ticket.td or 0))
  end
  if dead then last = math.max(last, dead.ends) end
  redis.call('HSET', HOLDERS, h.t, cjson.encode(h))
  redis.call('PEXPIRE', HOLDERS, math.max(1, last - real_ms))
end

local function keep(h)
  store(h)
  table.insert(holders(), h)
end

local function unkeep(id)
  redis.call('HDEL', HOLDERS, id)
  local hs = holders()
  for i = #hs, 1, -1 do
    if hs[i].t == id then table.remove(hs, i) end
  end
  changed()
end
"""
