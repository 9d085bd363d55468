"""One module per sample scenario; truth.yaml, intended.yaml and asyncapi/ beside each."""
