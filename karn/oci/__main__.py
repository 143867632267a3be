"""`python3 -m karn.oci`: the same as the `karn-oci` script."""

import sys

from karn.oci.cli import main

sys.exit(main())
