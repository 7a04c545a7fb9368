-- wrk script: a closed-loop management write load. Every request creates a new entry
-- (POST /v1/entries/<type>, a small JSON body), so concurrent writes never collide (no 409s).
-- Headers given with -H (the management key) are sent with every request.
-- Env: WRITE_TYPE (default note): the content type, with a required text field `text`.

local type_id = os.getenv("WRITE_TYPE") or "note"
local path = "/v1/entries/" .. type_id
local headers = {}
local counter = 0
local tid = 0
local threads = 0

function setup(thread)
  thread:set("thread_no", threads)
  threads = threads + 1
end

function init(args)
  tid = tonumber(thread_no) or 0
  -- wrk.format uses the table it is given instead of wrk.headers (the -H headers): copy them.
  for k, v in pairs(wrk.headers) do headers[k] = v end
  headers["Content-Type"] = "application/json"
end

function request()
  counter = counter + 1
  local body = string.format('{"fields":{"text":"bench write %d-%d"}}', tid, counter)
  return wrk.format("POST", path, headers, body)
end
