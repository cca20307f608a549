"""Training DVIS-DAQ: data (YouTube-VIS format, synthetic videos), losses, the three stages."""
