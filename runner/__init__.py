"""The staged pipeline: preprocess → transcribe → enhance → summarize, one model loaded at a time."""
