from edgemia.cli import main

# Guarded so that child processes started with "spawn" can import this module.
if __name__ == "__main__":
    raise SystemExit(main())
