-- wrk script: order lists (GET /api/orders?limit=20) spread over many users, each with its token.
--   wrk -s orders-list.lua URL -- USERS_FILE      (USERS_FILE: "USER_ID TOKEN" per line)
local users, n = {}, 0

function init(args)
  for line in io.lines(args[1]) do
    local id, tok = line:match("^(%S+)%s+(%S+)$")
    if id then users[#users + 1] = { id = id, tok = tok } end
  end
end

function request()
  n = n + 1
  local u = users[(n % #users) + 1]
  return wrk.format("GET", "/api/orders?limit=20", { ["X-User-Id"] = u.id, ["Authorization"] = "Bearer " .. u.tok })
end

function done(summary, latency, requests)
  io.write(string.format("lists %d p50_ms %.2f p99_ms %.2f\n",
    summary.requests, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
