"""The arm64 install check runs where its root filesystem was built.

``scripts/deploytest-cache --arm64`` builds it (about 20 minutes of emulated package
configuration, so ``scripts/setup --dev`` and CI do not); NETMON_ARM64_CHECK=1 demands the
check (then a missing root filesystem is a skip, which CI counts as a failure).
"""

import os

from tests.helpers.container import ROOTFS_ARM64

collect_ignore = []
if not ROOTFS_ARM64.is_dir() and os.environ.get("NETMON_ARM64_CHECK") != "1":
    collect_ignore.append("test_arm64.py")
