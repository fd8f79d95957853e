"""M2D (Masked Modeling Duo) upstreams: M2D, M2D-S, M2D-AS/M2D-X and the M2D-CLAP audio tower."""
