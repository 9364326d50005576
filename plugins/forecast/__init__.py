"""Built-in aitk plugin: the `forecast` use case (time-series forecasting with an LSTM or GRU)."""
