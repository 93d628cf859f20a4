from kvproxy.cli import proxy_main

raise SystemExit(proxy_main())
