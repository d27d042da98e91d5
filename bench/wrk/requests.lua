-- Load script for wrk: varied requests from a file, and one JSON line of figures at the end.
--
--   wrk -s requests.lua URL -- GET paths.txt     each request GETs a random line (a path with query) of paths.txt
--   wrk -s requests.lua URL -- POST bodies.txt   line 1 is the path; each request POSTs a random later line as its body
--   wrk -s requests.lua URL                      the URL's own path, every time (the trivial endpoint)

local method, path, items = "GET", nil, {}
local headers = { ["Accept"] = "application/fhir+json" }
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_number", thread_count)
end

function init(args)
  -- Each wrk thread has its own Lua state: seed it differently so threads do not walk the same ids in step.
  math.randomseed(os.time() * 1000 + (thread_number or 0))
  if args[1] == nil then
    return
  end
  method = args[1]
  local first = true
  for line in io.lines(args[2]) do
    if method == "POST" and first then
      path = line
    else
      items[#items + 1] = line
    end
    first = false
  end
  if method == "POST" then
    headers["Content-Type"] = "application/fhir+json"
    headers["Prefer"] = "return=minimal"
  end
end

function request()
  if #items == 0 then
    return wrk.format(method, nil, headers)
  end
  local item = items[math.random(#items)]
  if method == "POST" then
    return wrk.format("POST", path, headers, item)
  end
  return wrk.format("GET", item, headers)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"p50": %d, "p95": %d, "p99": %d, "max": %d, "mean": %.1f}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max, latency.mean))
end
