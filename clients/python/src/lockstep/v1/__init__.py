"""Generated protocol code for lockstep v1 (``crates/proto/proto/lockstep/v1/lockstep.proto``).

Do not edit the ``lockstep_pb2*`` modules: regenerate them with ``scripts/gen_proto.py``.
"""
