# Export profile: dynamic shapes, fp16 weights and compute for GPU deployment; input and outputs stay fp32.
static_shape = None
fp16 = True
fp16_io = False
opset = 18
exporter = "dynamo"
target = "any"
