# Export profile: dynamic batch/height/width, fp32. The default.
static_shape = None
fp16 = False
opset = 18
exporter = "dynamo"
target = "any"
