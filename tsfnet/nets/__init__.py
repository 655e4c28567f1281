"""Building blocks: HyperConv, the Seq2Seq encoder and decoder, HyperConv-CBAM."""
