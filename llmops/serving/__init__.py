"""Serving on KServe: render (config -> objects), validate (objects -> errors), deploy (apply,
wait, delete), call (inference clients), and a local server with vLLM's OpenAI completions API.

render and validate are pure; only kube.py touches a cluster. Nothing here imports kubernetes,
torch or transformers at module level.
"""

RUNTIME_KINDS = ("vllm", "caikit_tgis", "tgis", "hf", "llmisvc")
# the kind of the object that serves the model (llmisvc: no ServingRuntime beside it)
SERVED_BY = {"llmisvc": "LLMInferenceService"}  # every other runtime: "InferenceService"

# model formats each runtime serves (its ServingRuntime's supportedModelFormats)
MODEL_FORMATS = {"vllm": ("vLLM", "vllm"), "caikit_tgis": ("caikit",), "tgis": ("pytorch",),
                 "hf": ("huggingface",),
                 "llmisvc": ("vLLM",)}  # llmisvc: not rendered (an LLMInferenceService runs vLLM)
# protocols each runtime speaks (caikit_tgis: REST on 8080 or gRPC on 8085)
PROTOCOLS = {"vllm": ("http",), "caikit_tgis": ("http", "grpc"), "tgis": ("grpc",), "hf": ("http",),
             "llmisvc": ("http",)}
# which export layout each runtime reads at /mnt/models
LAYOUT = {"vllm": "hf", "caikit_tgis": "caikit", "tgis": "hf", "hf": "hf", "llmisvc": "hf"}
