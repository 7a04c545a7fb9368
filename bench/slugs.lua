-- wrk script: GET /api/v1/entries/article/by-slug/article-NNNN, rotating through the
-- 950 published slugs of bench/seed.py (article-0000 .. article-0999 without i % 20 == 7).
-- Each wrk thread starts at its own offset so the threads don't request in lock-step.
-- Headers given with -H (the delivery key) are sent with every request.
-- Env: SLUG_PREFIX (default /api/v1/entries/article/by-slug/), SLUG_BASE (default article: the
-- slugs are SLUG_BASE-NNNN; run.sh's landing rows set landing, the landing pages of seed.py).
-- (A unique unknown query parameter no longer misses the delivery cache: its key holds only the
-- parameters the read uses. run.sh and mixed.sh measure misses with CMS_DELIVERY_CACHE_MB=0.)

local prefix = os.getenv("SLUG_PREFIX") or "/api/v1/entries/article/by-slug/"
local base = os.getenv("SLUG_BASE") or "article"
local paths = {}
for i = 0, 999 do
  if i % 20 ~= 7 then
    paths[#paths + 1] = prefix .. string.format("%s-%04d", base, i)
  end
end

local counter = 0
local tid = 0  -- this thread's number, from the global thread_no that setup() sets
local threads = 0

function setup(thread)
  thread:set("thread_no", threads)
  threads = threads + 1
end

function init(args)
  tid = tonumber(thread_no) or 0
  counter = tid * 317
end

function request()
  counter = counter + 1
  return wrk.format("GET", paths[(counter % #paths) + 1])
end
