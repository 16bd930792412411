import sys

from live import threads

threads.prepare_environment()  # before anything loads PyTorch (live.cli does it too, for the console script)

from live.cli import main  # noqa: E402

sys.exit(main())
