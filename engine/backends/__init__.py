"""Backends the loop calls: outpainters (`outpaint*`), depth completers (`depth*`), text-to-image, the model
registry (`models`) and the name -> backend table (`registry`)."""
