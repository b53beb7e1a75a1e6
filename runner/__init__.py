"""Running workflows without the ComfyUI UI: ``runner.headless`` executes API-format workflows
in-process with ComfyUI's own executor and this pack's nodes."""
