hs = {}
if obj.status ~= nil then
  hs.status = "Healthy"
-- the `end` of the if is missing
return hs
