"""HJ 212-2017, the protocol of Chinese environmental data loggers and platforms: the codec
(:mod:`.codec`) and the stream splitter (:mod:`.stream`), both pure."""
