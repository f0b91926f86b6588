# Export profile: one fixed input shape (batch 1, 800x1216), fp32 - for runtimes that need static shapes.
static_shape = (800, 1216)
batch = 1
fp16 = False
opset = 18
exporter = "dynamo"
target = "any"
