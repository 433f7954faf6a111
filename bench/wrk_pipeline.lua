-- wrk -s bench/wrk_pipeline.lua URL -- DEPTH: every request wrk sends is DEPTH GETs of URL written
-- at once (HTTP/1.1 pipelining), as TFB loads /plaintext (DEPTH 16). wrk counts each response.
init = function(args)
  local depth = tonumber(args[1]) or 16
  local requests = {}
  for i = 1, depth do
    requests[i] = wrk.format()
  end
  pipelined = table.concat(requests)
end

request = function()
  return pipelined
end
