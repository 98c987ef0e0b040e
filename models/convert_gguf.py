"""Write a GGUF checkpoint as a plain Hugging Face directory (safetensors + tokenizer).

transformers dequantizes the GGUF on load; saving the result once makes later runs load
in seconds. The directory is written to a temporary name and renamed when complete.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

from .loading import DTYPES, load_config, load_model, load_tokenizer, locate


def convert(gguf_file: str, out: str, dtype: str = "bfloat16") -> str:
    loc = locate(None, gguf_file)
    load_config(loc)  # refuses unsupported families before the slow dequantization
    import torch

    model = load_model(loc, DTYPES[dtype], torch.device("cpu"))
    tokenizer = load_tokenizer(loc)
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=".tmp-convert-")
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if os.path.exists(out):
            shutil.rmtree(out)
        os.replace(tmp, out)
        os.chmod(out, 0o755)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--gguf_file", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES))
    args = p.parse_args(argv)
    print(convert(args.gguf_file, args.out, args.dtype))
    return 0


if __name__ == "__main__":
    sys.exit(main())
