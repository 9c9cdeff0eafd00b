-- Token grants driven by wrk (bench/token_endpoint.py starts it; see bench/README.md).
--
-- BENCH_ITEMS names a file with one item per line: "code verifier" pairs for the
-- authorization_code grant, or refresh tokens for the refresh_token grant (BENCH_MODE "code" or
-- "refresh"); BENCH_THREADS is wrk's -t. The items are dealt out to the threads, and each
-- request takes one. A refresh answer puts the successor token back in the queue, so every
-- chain rotates as a portal's would. In code mode a connection with no code left waits, and
-- the thread stops once its last answer is in: every code is redeemed exactly once.
-- BENCH_MODE "get" sends plain GETs of the URL (the /healthz floor), with no items.

local mode = os.getenv("BENCH_MODE")
local redirect_uri = os.getenv("BENCH_REDIRECT_URI") or ""
local dealt, all_items, threads = 0, nil, {}

function setup(thread)
  if all_items == nil then
    all_items = {}
    if mode ~= "get" then
      for line in io.lines(os.getenv("BENCH_ITEMS")) do
        table.insert(all_items, line)
      end
    end
  end
  local count = tonumber(os.getenv("BENCH_THREADS"))
  dealt = dealt + 1
  local mine = {}
  for index = dealt, #all_items, count do
    table.insert(mine, all_items[index])
  end
  thread:set("items", mine)
  table.insert(threads, thread)
end

function init(args)
  queue, first, last, in_flight, failures = {}, 1, 0, 0, 0
  for _, item in ipairs(items) do
    last = last + 1
    queue[last] = item
  end
  unclaimed = last  -- items no connection has yet been promised (see delay)
  promised, sent = 0, 0
end

local function escape(text)
  return (text:gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", c:byte()) end))
end

-- wrk asks delay() before each request() of a connection; promising an item here keeps two
-- connections from being told "go" for the same last item.
function delay()
  if mode == "get" then return 0 end
  if unclaimed > 0 then
    unclaimed = unclaimed - 1
    promised = promised + 1
    return 0
  end
  return 60000  -- code mode, nothing left: wait for the stop
end

function request()
  if mode == "get" then return wrk.format("GET") end
  if sent == promised then
    -- wrk calls request() once before the run, to check the request it makes: take nothing
    return wrk.format("GET")
  end
  sent = sent + 1
  local item = queue[first]
  if item == nil then  -- woke from the long wait after all: end here
    finished()
    return wrk.format("GET")
  end
  queue[first] = nil
  first = first + 1
  in_flight = in_flight + 1
  local body
  if mode == "code" then
    local code, verifier = item:match("^(%S+) (%S+)$")
    body = "grant_type=authorization_code&code=" .. escape(code) .. "&redirect_uri="
      .. escape(redirect_uri) .. "&code_verifier=" .. escape(verifier)
  else
    body = "grant_type=refresh_token&refresh_token=" .. escape(item)
  end
  return wrk.format("POST", nil, nil, body)
end

-- All codes redeemed: tell bench/harness.py, which interrupts wrk (its main thread would
-- otherwise sleep out the whole -d duration) so that the reported duration is the real one.
function finished()
  local marker = io.open(os.getenv("BENCH_DONE"), "w")
  marker:write("done\n")
  marker:close()
  wrk.thread:stop()
end

function response(status, headers, body)
  if mode == "get" then
    if status ~= 200 then failures = failures + 1 end
    return
  end
  in_flight = in_flight - 1
  if status ~= 200 then
    failures = failures + 1
  elseif mode ~= "code" then
    local token = body:match('"refresh_token"%s*:%s*"([^"]+)"')
    if token then
      last = last + 1
      queue[last] = token
      unclaimed = unclaimed + 1
    else
      failures = failures + 1
    end
  end
  if mode == "code" and first > last and in_flight == 0 then
    finished()
  end
end

function done(summary, latency, requests)
  local failed = 0
  for _, thread in ipairs(threads) do
    failed = failed + (thread:get("failures") or 0)
  end
  io.write(string.format("WRK requests=%d duration_us=%d p50_us=%d p99_us=%d failures=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), failed))
end
