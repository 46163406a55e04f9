-- wrk script: counts the answers "r" (a resumed TLS session) and "." (a full handshake) of an
-- nginx location that returns $ssl_session_reused (scripts/bench-tls's check of its clients).
-- Each wrk thread counts in its own Lua state; done() adds them up.
local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
end

function init(args)
  full, resumed, other = 0, 0, 0
end

function response(status, headers, body)
  if body == "r" then resumed = resumed + 1 elseif body == "." then full = full + 1 else other = other + 1 end
end

function done(summary, latency, requests)
  local f, r, o = 0, 0, 0
  for _, t in ipairs(threads) do
    f, r, o = f + t:get("full"), r + t:get("resumed"), o + t:get("other")
  end
  io.write(string.format("handshakes full %d resumed %d other %d\n", f, r, o))
end
