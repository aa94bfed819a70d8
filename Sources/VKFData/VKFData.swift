// VKFData: instruction / chat / preference datasets, masking and packing.
