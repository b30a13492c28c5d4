"""FlexiMigrate's benchmark suite (driven by bench/run): namespace hosts joined
by a shaped link, real daemons, real runc and CRIU, real baselines.  Standard
library only; run with Debian's /usr/bin/python3."""
