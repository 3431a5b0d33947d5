"""Before a run starts: stored checkpoints of a format this mpitrack cannot read are
refused in one message that names their regions and says what to do."""

from __future__ import annotations

import pytest

from mpitrack.errors import UsageError
from mpitrack.track.checkpoint import READABLE_VERSIONS
from mpitrack.wiring import check_checkpoint_formats


def test_readable_formats_and_regions_outside_the_config_pass() -> None:
    formats = {region: (7, version) for region, version in enumerate(READABLE_VERSIONS)}
    formats[99] = (3, 1)  # a region this config does not run
    check_checkpoint_formats(formats, set(range(len(READABLE_VERSIONS))))


def test_an_upgrade_leaves_every_region_old_and_gets_one_message_per_version() -> None:
    formats = {region: (region + 5, 1) for region in range(12)}
    formats[12] = (4, 99)
    formats[13] = (4, READABLE_VERSIONS[-1])
    with pytest.raises(UsageError) as caught:
        check_checkpoint_formats(formats, set(range(14)))
    message = str(caught.value)
    assert "\n" not in message
    assert message.count("format version 1,") == 1 and message.count("format version 99,") == 1
    assert "region 0 (after scan 5), region 1 (after scan 6)" in message
    assert "region 9 (after scan 14) and 2 more regions" in message
    assert "region 12 (after scan 4)" in message and "region 13" not in message
    assert "delete its rows from measurements, tracks and tracker_checkpoints" in message
