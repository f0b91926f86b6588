# Export profile: dynamic shapes, fp32, for a CPU runtime, with the 3x3 convolutions that featx.accel measures faster
# as Winograd in that runtime on this CPU (the file's graph then depends on the CPU that exported it).
static_shape = None
fp16 = False
opset = 18
exporter = "dynamo"
target = "cpu"
winograd = "auto"
