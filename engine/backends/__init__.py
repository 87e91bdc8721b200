"""Backends the loop calls: outpainters (`outpaint*`), depth completers (`depth*`), text-to-image, the name ->
backend table (`registry`, `loading`), and the model registry (`model_registry`: what each model is;
`models`: finding, checking and downloading its weights on this machine)."""
