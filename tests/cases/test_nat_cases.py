"""NAT and SNAT through the C core, packet in / packet out (no root)."""

import pytest

from pyfwd.dataplane.core import Core
from pyfwd.model import Real

from . import nat_defs as nd
from .harness import check_case


def make_core(flows=4096, **kw):
    core = Core(mac=nd.OUT_MAC, mac2=nd.IN_MAC, flows=flows, **kw)
    core.set_snat(Real(nd.SNAT).address, nd.SNAT_PORTS)
    core.publish_services(nd.SERVICES, nd.MACS, nd.OUT_IFS)
    return core


@pytest.mark.parametrize("name,steps", nd.sequences(),
                         ids=[n for n, _ in nd.sequences()])
def test_sequence(name, steps):
    core = make_core()
    for case in steps:
        [out], [result] = core.process([case.frame], in_if=case.in_if)
        check_case(case, out, result)
