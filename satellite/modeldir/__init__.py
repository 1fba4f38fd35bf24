"""Model directories: the manifest (`manifest`), the graph role contracts (`contract`), reading
graphs without the `onnx` package (`onnxread`), the official export's side files
(`sidefiles`), checking a directory (`verify`), writing a manifest (`make`), the model catalog
(`catalog`), fetching from the Hugging Face hub (`fetch`) and the `lfm-satellite model`
commands (`commands`, `info`)."""
