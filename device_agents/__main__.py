"""``python3 -m device_agents`` entry point."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
