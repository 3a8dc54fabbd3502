"""`python -m vamu_tasks.testing.fake_llm`: serve the fake until SIGTERM or SIGINT."""

from vamu_tasks.testing.fake_llm.server import main

raise SystemExit(main())
