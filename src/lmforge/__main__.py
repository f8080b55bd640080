from lmforge.cli import main

if __name__ == "__main__":  # vllm's engine starts subprocesses that re-import the main module
    raise SystemExit(main())
