-- wrk script: the URL given to wrk, plus a query parameter nocache=<thread>-<n> unique per
-- request, so that every request misses the CMS delivery cache (its key includes the query
-- string; the API ignores unknown parameters). Headers given with -H are kept.

local tid = 0  -- this thread's number, from the global thread_no that setup() sets
local counter = 0
local threads = 0

function setup(thread)
  thread:set("thread_no", threads)
  threads = threads + 1
end

function init(args)
  tid = tonumber(thread_no) or 0
end

function request()
  counter = counter + 1
  local sep = string.find(wrk.path, "?", 1, true) and "&" or "?"
  return wrk.format("GET", wrk.path .. sep .. "nocache=" .. tid .. "-" .. counter)
end
