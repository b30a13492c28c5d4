"""The SDN Controller Interface's OpenFlow 1.3 encoder, byte for byte against
os-ken (Debian's python3-os-ken, the seed's SDN controller): os-ken encodes
the same messages and must produce the same bytes, and its parser must read
ours back into the same fields."""
import json
import os
import subprocess

import pytest

from conftest import ROOT

try:
    from os_ken.ofproto import ofproto_parser
    from os_ken.ofproto import ofproto_v1_3 as ofp
    from os_ken.ofproto import ofproto_v1_3_parser as p13
except ImportError:  # a missing prerequisite fails loudly, never skips
    pytest.fail("os-ken is missing: apt-get install python3-os-ken (scripts/setup.sh installs it), "
                "and run the tests with Debian's /usr/bin/python3", pytrace=False)

VECTORS = os.path.join(ROOT, "build", "tests", "unit", "of-vectors")
MAC = "02:fd:0a:4d:00:0a"


class DP:
    ofproto = ofp
    ofproto_parser = p13


def osken(name):
    """os-ken's encoding of the message of.vectors calls `name`."""
    dp = DP()
    if name == "hello":
        m, xid = p13.OFPHello(dp), 1
    elif name == "features_request":
        m, xid = p13.OFPFeaturesRequest(dp), 2
    elif name == "barrier_request":
        m, xid = p13.OFPBarrierRequest(dp), 3
    elif name == "echo_reply":
        m, xid = p13.OFPEchoReply(dp, data=b"ping"), 4
    elif name == "flow_redirect_ip":
        m, xid = p13.OFPFlowMod(
            dp, cookie=0x464d000000000001, priority=200, buffer_id=ofp.OFP_NO_BUFFER, out_port=ofp.OFPP_ANY,
            out_group=ofp.OFPG_ANY, match=p13.OFPMatch(eth_type=0x0800, ipv4_dst="10.77.0.10"),
            instructions=[p13.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, [
                p13.OFPActionSetField(eth_dst=MAC), p13.OFPActionOutput(2, max_len=0xffff)])]), 5
    elif name == "flow_arp_all_fields":
        m, xid = p13.OFPFlowMod(
            dp, cookie=0x464d000000000002, command=ofp.OFPFC_MODIFY_STRICT, idle_timeout=30, hard_timeout=300,
            priority=201, buffer_id=ofp.OFP_NO_BUFFER, out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY,
            flags=ofp.OFPFF_SEND_FLOW_REM,
            match=p13.OFPMatch(in_port=3, eth_dst="ff:ff:ff:ff:ff:ff", eth_src=MAC, eth_type=0x0806, arp_op=1,
                               arp_tpa="10.77.0.10"),
            instructions=[p13.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS,
                                                    [p13.OFPActionOutput(ofp.OFPP_NORMAL, max_len=0xffff)])]), 6
    elif name == "flow_delete_cookie":
        m, xid = p13.OFPFlowMod(
            dp, cookie=0x464d000000000000, cookie_mask=0xffff000000000000, table_id=ofp.OFPTT_ALL,
            command=ofp.OFPFC_DELETE, buffer_id=ofp.OFP_NO_BUFFER, out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY,
            match=p13.OFPMatch()), 7
    elif name == "flow_normal":
        m, xid = p13.OFPFlowMod(
            dp, priority=0, buffer_id=ofp.OFP_NO_BUFFER, out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY,
            match=p13.OFPMatch(), instructions=[p13.OFPInstructionActions(
                ofp.OFPIT_APPLY_ACTIONS, [p13.OFPActionOutput(ofp.OFPP_NORMAL, max_len=0xffff)])]), 8
    else:
        raise AssertionError(f"no os-ken twin for {name}")
    m.xid = xid
    m.serialize()
    return bytes(m.buf)


def vectors():
    p = subprocess.run([VECTORS], capture_output=True, text=True, check=True)
    return [json.loads(line) for line in p.stdout.splitlines()]


def test_our_bytes_are_os_kens_bytes():
    vs = vectors()
    assert len(vs) == 8, vs
    for v in vs:
        ours = bytes.fromhex(v["hex"])
        theirs = osken(v["name"])
        assert ours == theirs, f"{v['name']}:\n ours   {ours.hex()}\n os-ken {theirs.hex()}"


def test_os_ken_reads_ours_back():
    by = {v["name"]: bytes.fromhex(v["hex"]) for v in vectors()}
    for name, raw in by.items():
        ver, typ, ln, xid = ofproto_parser.header(raw)
        assert ver == 4 and ln == len(raw), name
        msg = ofproto_parser.msg(None, ver, typ, ln, xid, raw)
        if name.startswith("flow_"):
            assert isinstance(msg, p13.OFPFlowMod), (name, msg)
    m = ofproto_parser.msg(None, 4, ofp.OFPT_FLOW_MOD, len(by["flow_redirect_ip"]), 5, by["flow_redirect_ip"])
    assert dict(m.match.items()) == {"eth_type": 0x0800, "ipv4_dst": "10.77.0.10"}
    acts = m.instructions[0].actions
    assert acts[0].key == "eth_dst" and acts[0].value == MAC and acts[1].port == 2
    m = ofproto_parser.msg(None, 4, ofp.OFPT_FLOW_MOD, len(by["flow_arp_all_fields"]), 6, by["flow_arp_all_fields"])
    assert dict(m.match.items()) == {"in_port": 3, "eth_dst": "ff:ff:ff:ff:ff:ff", "eth_src": MAC,
                                     "eth_type": 0x0806, "arp_op": 1, "arp_tpa": "10.77.0.10"}
    assert (m.command, m.idle_timeout, m.hard_timeout, m.flags) == (ofp.OFPFC_MODIFY_STRICT, 30, 300, 1)
