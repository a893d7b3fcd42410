"""The DDiT backbone of SEDD, MDLM and BD3-LM, its two heads, its output head and formats."""
