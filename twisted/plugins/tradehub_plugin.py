from twisted.application.service import ServiceMaker

tradehub = ServiceMaker("tradehub", "tap", "The tradehub trading hub daemon.", "tradehub")
