TAG = "helper imported"
