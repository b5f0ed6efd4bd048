"""Generated protobuf messages and gRPC stubs of Marquee's ``marquee.v1`` API.

Written by ``clients/python/generate_stubs.py``; do not edit. Each ``.proto`` file
``proto/marquee/v1/NAME.proto`` becomes ``NAME_pb2`` (messages, with ``.pyi`` type stubs)
and ``NAME_pb2_grpc`` (service stubs).
"""
