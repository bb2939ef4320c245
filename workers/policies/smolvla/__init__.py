"""SmolVLA (LeRobot's `smolvla`): a SmolVLM2 backbone cut to its first N text layers, and a flow-matching action
expert that interleaves self-attention with cross-attention onto the VLM's keys and values.

layout.py reads LeRobot's checkpoint (config, processor statistics, the VLM's own config and tokenizer in
`vlm/`), model.py builds the modules under LeRobot's tensor names, flow.py runs them (prefix prefill, Euler
steps over the cached prefix), policy.py serves them, tiny.py writes the tiny preset.
"""
